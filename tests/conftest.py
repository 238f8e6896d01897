"""Shared pytest setup: offline hub, hypothesis profile, and the run header naming what is under test."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from hypothesis import settings

from conformance import implementations
from conformance.base import versions
from conformance.model import generators  # noqa: F401  (registers the profiles)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config) -> None:
    for impl in implementations.REGISTRY.values():
        if impl.test_marker:
            where = impl.elsewhere or impl.name
            config.addinivalue_line("markers", f"{impl.test_marker}: needs {impl.package} ({where})")


def pytest_report_header(config) -> list[str]:
    impls = ", ".join(i.name for i in implementations.selected(None))
    pkgs = " ".join(f"{k}=={v}" for k, v in versions.installed().items())
    profile = os.environ.get("HYPOTHESIS_PROFILE", "dev")
    return [f"conformance: implementations {impls} | hypothesis profile {profile}", f"conformance: {pkgs}"]
