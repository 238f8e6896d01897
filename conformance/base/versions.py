"""Installed package versions and version-range matching used by families, recipes and expectations."""

from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from urllib.parse import unquote, urlparse

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from conformance.base.errors import CaseFileError

# Packages whose versions decide behaviour; every results record carries them. Each implementation's
# package is added when conformance.implementations finds it (`track`).
TRACKED = ["torch", "transformers", "safetensors", "hypothesis"]
# Recorded, but not what a run is labelled by: the labels name what is under test.
SUPPORTING = ("torch", "safetensors", "hypothesis")


def under_test(found: dict[str, str], sep: str = ", ") -> str:
    """`transformers 5.24.0, peft 0.21.2, ...`: the versions that name what was tested."""
    return sep.join(f"{k} {v}" for k, v in found.items() if k not in SUPPORTING)


def track(*packages: str) -> None:
    TRACKED.extend(p for p in packages if p not in TRACKED)
    installed.cache_clear()
    sources.cache_clear()


@functools.cache
def installed() -> dict[str, str]:
    """Versions of the tracked packages in this environment (absent ones are left out)."""
    found = {}
    for name in TRACKED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@functools.cache
def sources() -> dict[str, str]:
    """Where each tracked package that was not installed from an index came from (PEP 610).

    A pull request's build is installed from a path or a git URL: say which, and its commit, so the
    header of a run (and of a gate) names exactly what was tested. Index installs are left out.
    """
    found = {}
    for name in installed():
        try:
            raw = metadata.distribution(name).read_text("direct_url.json")
        except metadata.PackageNotFoundError:
            continue
        if not raw:
            continue
        try:
            direct = json.loads(raw)
            url = str(direct["url"])
        except (ValueError, KeyError, TypeError):
            continue
        vcs = direct.get("vcs_info")
        if isinstance(vcs, dict):
            found[name] = f"{url}@{vcs.get('commit_id', '?')}"
        elif url.startswith("file://"):
            path = unquote(urlparse(url).path)
            commit = _git_commit(path)
            found[name] = f"{path}" + (f" @ {commit}" if commit else "")
        else:
            found[name] = url
    return found


def _git_commit(path: str) -> str | None:
    """HEAD of the git checkout at `path` ("+dirty" with uncommitted changes), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", path, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def parse_spec(text: str, where: str) -> SpecifierSet:
    """A version range such as ">=5.5,<6"; `where` names the file and field for the error line."""
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise CaseFileError(where, f"not a version range: {text!r} (expected e.g. '>=5.5,<6')") from None


def satisfies(
    package: str, spec: SpecifierSet, versions: dict[str, str] | None = None, releases_only: bool = False
) -> bool:
    """Whether the (installed or given) version of `package` lies in `spec`; an absent package never does.

    Local builds ("2.13.0+cpu") and dev versions of a PR branch ("0.22.0.dev0") match plain ranges: they
    are compared on the public release, pre-releases let through. With `releases_only` (the rule for
    expectations, which record what released builds do), a dev build matches only a range without an
    upper bound: its version string says which release it follows, not which fixes it already has
    (PEFT main said 0.18.2.dev0 while carrying 0.19's features), so "<0.19" says nothing about it.
    """
    versions = installed() if versions is None else versions
    raw = versions.get(package)
    if raw is None:
        return False
    try:
        version = Version(raw)
    except InvalidVersion:
        return False
    if releases_only and version.is_devrelease and any(s.operator not in (">=", ">") for s in spec):
        return False
    return spec.contains(Version(version.public), prereleases=True)


def is_dev_build(version: str) -> bool:
    try:
        return Version(version).is_devrelease
    except InvalidVersion:
        return False
