"""tools/install_nemo.py's version rule: older transformers are given a kernels release they import with."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import install_nemo


@pytest.mark.parametrize(
    ("version", "than", "older"),
    [
        ("5.8.1", "5.9", True),
        ("5.9.0", "5.9", False),
        ("5.10.0", "5.9", False),  # numbers, not strings
        ("5.18.0.dev0", "5.9", False),
        ("4.57.6", "5.9", True),
        ("0.11.7", "0.12", True),
        ("0.19.1", "0.12", False),
        ("2.13.0+cpu", "2.14", True),
    ],
)
def test_older_compares_release_numbers(version, than, older):
    assert install_nemo._older(version, than) is older
