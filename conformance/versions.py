"""Installed package versions and version-range matching used by families, recipes and expectations."""

from __future__ import annotations

import functools
from importlib import metadata

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from conformance.errors import CaseFileError

# Packages whose versions decide behaviour; every results record carries them.
TRACKED = ("torch", "transformers", "peft", "safetensors", "hypothesis", "nemo-automodel")


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


def parse_spec(text: str, where: str) -> SpecifierSet:
    """A version range such as ">=5.5,<6"; `where` names the file and field for the error line."""
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise CaseFileError(where, f"not a version range: {text!r} (expected e.g. '>=5.5,<6')") from None


def satisfies(package: str, spec: SpecifierSet, versions: dict[str, str] | None = None) -> bool:
    """Whether the (installed or given) version of `package` lies in `spec`; an absent package never does."""
    versions = installed() if versions is None else versions
    raw = versions.get(package)
    if raw is None:
        return False
    try:
        version = Version(raw)
    except InvalidVersion:
        return False
    # Local builds ("2.13.0+cpu") and dev versions of a PR branch ("0.22.0.dev0") must match plain
    # ranges: compare on the public release and let pre-releases through.
    return spec.contains(Version(version.public), prereleases=True)
