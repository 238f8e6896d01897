"""Reading the YAML data files under cases/, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from conformance.base import casesdir
from conformance.base.errors import CaseFileError


def cases_dir() -> Path:
    """cases/ as conformance.casesdir finds it; CONFORMANCE_CASES points elsewhere (e.g. a PR's own
    expectations)."""
    return casesdir.find()


def load(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CaseFileError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise CaseFileError(str(path), f"{line}{problem}") from None


class Fields:
    """Typed access to one mapping of a data file; every error names `where` and the field."""

    def __init__(self, data: Any, where: str, allowed: set[str] | None = None) -> None:
        if not isinstance(data, dict):
            raise CaseFileError(where, f"expected a mapping, got {type(data).__name__}")
        self.data = data
        self.where = where
        if allowed is not None:
            extra = sorted(set(data) - allowed)
            if extra:
                raise CaseFileError(
                    f"{where}.{extra[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}"
                )

    def at(self, key: str) -> str:
        return f"{self.where}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise CaseFileError(self.at(key), "required field is missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (
            kind is not bool and isinstance(value, bool) and bool not in _tuple(kind)
        ):
            names = "/".join(k.__name__ for k in _tuple(kind))
            raise CaseFileError(self.at(key), f"expected {names}, got {value!r}")
        return value

    def names(self, key: str, default: Any = ...) -> list[str]:
        """A string or a list of strings, always returned as a list."""
        value = self.get(key, (str, list), default)
        if value is None:
            return default
        if isinstance(value, str):
            return [value]
        if not all(isinstance(item, str) for item in value):
            raise CaseFileError(self.at(key), f"expected a list of names, got {value!r}")
        return list(value)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
