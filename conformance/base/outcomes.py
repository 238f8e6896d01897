"""Outcomes of a (case, check): warning capture per pipeline step and the classification rules."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

PASS = "pass"
WARNED = "diverged-warned"
SILENT = "diverged-silent"
REFUSED = "refused"
CRASHED = "crashed"
SKIPPED = "skipped"
OUTCOMES = (PASS, WARNED, SILENT, REFUSED, CRASHED, SKIPPED)
# Whether an implementation builds a family/flag combination at all: where it declares it will not,
# a refusal is by design and an expectation can say so (`when: support:`).
SUPPORTED, REFUSED_BY_DESIGN = "supported", "refused-by-design"
SUPPORT = (SUPPORTED, REFUSED_BY_DESIGN)

# A warning counts as a warning about tying when it names the tie; the load report's bare
# "MISSING" line does not, which is exactly the silent failure users hit.
_TIE_WORDS = re.compile(r"\bti(e|ed|es|ing)\b|tie_word_embeddings|tied_|weight[_ ]tying", re.IGNORECASE)
# Exceptions a library raises on purpose to reject a setup; anything else is a crash.
_REFUSAL_TYPES = (ValueError, NotImplementedError)
# Path fragments of the code under test; each implementation adds its own (`register_library`).
_LIBRARIES = ["/transformers/"]
# The suite's own code never refuses for a library, even in a folder named after the library it drives (an
# implementation's package, conformance/implementations/<package>/, holds that package's fragment).
_SUITE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))).replace("\\", "/") + "/"


def register_library(*fragments: str) -> None:
    _LIBRARIES.extend(f for f in fragments if f not in _LIBRARIES)


def is_tie_warning(message: str) -> bool:
    return bool(_TIE_WORDS.search(message))


@dataclass
class StepFailure:
    step: str
    index: int
    outcome: str  # REFUSED or CRASHED
    message: str


@dataclass
class Capture:
    """Warnings (Python and library loggers) seen in each pipeline step, in order."""

    steps: list[str] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def tie_warnings(self, up_to: int) -> list[str]:
        seen: list[str] = []
        for index, message in self.warnings:
            if index <= up_to and is_tie_warning(message) and message not in seen:
                seen.append(message)
        return seen

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[int]:
        index = len(self.steps)
        self.steps.append(name)
        handler = _ListHandler()
        # transformers keeps its records to its own logger; everything else (peft, NeMo, which logs to
        # the root logger) propagates to root, whose handlers are swapped out so nothing is printed.
        root, library = logging.getLogger(), logging.getLogger("transformers")
        saved = root.handlers[:]
        root.handlers[:] = [handler]
        library.addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield index
        finally:
            root.handlers[:] = saved
            library.removeHandler(handler)
            for item in caught:
                self.warnings.append((index, _one_line(str(item.message))))
            for message in handler.messages:
                self.warnings.append((index, _one_line(message)))


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _one_line(message: str, limit: int = 600) -> str:
    """One line; a long one is cut at a space, so a link at its end is kept whole or left out, never cut."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit - 1] + " …"


def classify_exception(exc: BaseException) -> str:
    """REFUSED when a library under test raised ValueError/NotImplementedError itself, else CRASHED."""
    if not isinstance(exc, _REFUSAL_TYPES):
        return CRASHED
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return CRASHED
    origin = frames[-1].filename.replace("\\", "/")
    if origin.startswith(_SUITE):
        return CRASHED
    return REFUSED if any(part in origin for part in _LIBRARIES) else CRASHED


def failure(step: str, index: int, exc: BaseException) -> StepFailure:
    return StepFailure(step, index, classify_exception(exc), _one_line(f"{type(exc).__name__}: {exc}"))


def diverged(capture: Capture, horizon: int) -> str:
    """A failed check is warned if a tie warning came at or before the step that produced its inputs."""
    return WARNED if capture.tie_warnings(horizon) else SILENT


def reset_once_caches() -> None:
    """transformers logs some warnings once per process; clear that so each case sees its own."""
    with contextlib.suppress(ImportError, AttributeError):
        from transformers.utils import logging as hf_logging

        hf_logging.warning_once.cache_clear()
        hf_logging.info_once.cache_clear()


def quiet_libraries() -> None:
    """Progress bars and library log handlers off: what a case warns is captured, not printed."""
    # Every case saves and loads a checkpoint: progress bars would bury the run's own output.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    # Library warnings are captured per case into results.jsonl; printed too, they would flood the run.
    transformers.utils.logging.disable_default_handler()
