"""Errors that end a run with one clear line instead of a traceback."""

from __future__ import annotations

# Exit codes of every verb (the CLI's, and a session's when stopped).
# 3: the run was stopped (SIGINT/SIGTERM); its finished records are kept, `run --resume DIR` finishes it.
EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3


class ConformanceError(Exception):
    """Bad input to the suite: printed as one line, exit code 2."""


class CaseFileError(ConformanceError):
    """A malformed data file under cases/ (or an expectation file), naming the file and field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class UnknownName(ConformanceError):
    """A family, recipe, workflow, check or implementation the suite does not know."""

    def __init__(self, kind: str, name: str, known: list[str], where: str = "") -> None:
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}unknown {kind} {name!r}; known: {', '.join(sorted(known))}")
