"""Running planned cases in forked workers: a crash or a hang costs one case, never the run.

Cases never run in the parent. Each worker runs one case at a time and sends its records back; the
parent waits on every worker's pipe and process at once, so a worker that dies (a signal, an abort,
`os._exit`) or overruns the per-case time limit is seen at once: its case is recorded as crashed with
the reason, a new worker takes its place, and the run goes on. Records come back as cases finish, with
their plan index, so the caller can keep them on disk at once and put them back in plan order at the end.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from conformance.engine.core import Engine, Selection
from conformance.model.cases import Case
from conformance.model.pipeline import Workspace
from conformance.reading.expectations import ExpectationSet
from conformance.reading.results import Record

# Tiny models take well under a second a case (a few seconds for the first NeMo case of a worker):
# a minute is far beyond any healthy case and short enough that a hang costs little of a nightly.
DEFAULT_CASE_TIMEOUT = 60.0


class Interrupted(Exception):
    """The run was asked to stop (SIGINT/SIGTERM): finished records are kept, the rest did not run."""


def default_jobs() -> int:
    # Tiny models gain nothing from intra-op threads; one process per core is what scales.
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4))


def _serve(conn: Connection, selection: Selection, root: str) -> None:
    """A worker: judge each case the parent sends, send its records back; stop on None."""
    import torch

    from conformance.base import outcomes

    outcomes.quiet_libraries()  # a spawned worker starts without the parent's settings

    # The parent decides when the run stops and stops its workers itself; a terminal's Ctrl-C reaches
    # the whole process group and must not abort a case half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    # Expectations are matched in the parent, which sees every record.
    engine = Engine(
        selection, Workspace(Path(tempfile.mkdtemp(dir=root, prefix="worker-"))), ExpectationSet([])
    )
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            index, item = message
            # A case is judged as a run judges it; a task (export, import) does its own work with the engine.
            conn.send((index, engine.judge(item) if isinstance(item, Case) else item.judge(engine)))
    finally:
        engine.close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    index: int | None = None  # the plan index of the case it is running
    started: float = 0.0


@dataclass
class Pool:
    """Forked workers, each running one case at a time, replaced when one dies or overruns."""

    selection: Selection
    jobs: int
    case_timeout: float
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="conformance-"))
    workers: list[_Worker] = field(default_factory=list)
    method: str = ""  # how workers start: start_method(selection) unless given

    def start(self) -> _Worker:
        context = multiprocessing.get_context(self.method or start_method(self.selection))
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, self.selection, self.root), daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def retire(self, worker: _Worker) -> None:
        """Stop a worker at once (it may be hung in native code: no polite request would reach it)."""
        self.workers.remove(worker)
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()

    def close(self) -> None:
        for worker in list(self.workers):
            if worker.index is None and worker.process.is_alive():
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
                worker.process.join(2)
            self.retire(worker)
        shutil.rmtree(self.root, ignore_errors=True)


def start_method(selection: Selection) -> str:
    """fork: workers inherit the imported libraries and the parsed data files, so they start at once. CUDA
    cannot be used in a forked child of a process that initialised it: the GPU leg spawns its workers
    (each imports the libraries once, then runs many cases), and so does a CPU run on a machine where
    something in this process initialised CUDA (a library's import, a probe): PEFT, for one, loads adapter
    weights onto the GPU whenever there is one."""
    import torch

    return "spawn" if selection.device == "cuda" or torch.cuda.is_initialized() else "fork"


def death(exitcode: int | None) -> str:
    """Why a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the worker process was killed by {name} while running this case (a crash in native code?)"
    return f"the worker process exited with code {exitcode} while running this case (os._exit or abort?)"


class Task(Protocol):
    """Work on one case that is not a plain judging (what `export` saves, what `import` loads): it runs in
    a worker, with that worker's engine, and returns what the caller collects (picklable)."""

    case: Case

    def judge(self, engine: Engine) -> Any: ...


def judge_all(
    cases: Sequence[Case | Task],
    selection: Selection,
    jobs: int,
    case_timeout: float = DEFAULT_CASE_TIMEOUT,
    stop: Callable[[], bool] = lambda: False,
    method: str = "",
) -> Iterator[tuple[int, list[Record]]]:
    """(plan index, records) of every case, as each finishes; raises Interrupted once `stop()` says so.
    A task yields what its `judge` returns, or the records of its case if it never finished.

    A worker that dies takes only its case with it, recorded as crashed with the signal or exit code; a
    case past `case_timeout` seconds (0: no limit) is stopped and recorded as crashed, timed out.
    """
    pending = deque(enumerate(cases))
    pool = Pool(selection, max(1, min(jobs, len(cases))), case_timeout, method=method)
    # Builds the records of a case that did not finish; it runs nothing itself.
    recorder = Engine(
        selection, Workspace(Path(tempfile.mkdtemp(dir=pool.root, prefix="parent-"))), ExpectationSet([])
    )
    try:
        for _ in range(pool.jobs if cases else 0):
            pool.start()
        while pending or any(w.index is not None for w in pool.workers):
            if stop():
                raise Interrupted
            for worker in [w for w in pool.workers if w.index is None]:
                if not pending:
                    break
                worker.index, case = pending.popleft()
                worker.started = time.monotonic()
                worker.conn.send((worker.index, case))
            busy = [w for w in pool.workers if w.index is not None]
            deadline = min((w.started + case_timeout for w in busy), default=0.0) if case_timeout else 0.0
            limit = 1.0 if not deadline else max(0.0, min(1.0, deadline - time.monotonic()))
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=limit))
            for worker in busy:
                index = worker.index
                assert index is not None
                if worker.conn in ready or worker.conn.poll():
                    try:
                        done_index, records = worker.conn.recv()
                    except (EOFError, OSError):
                        pass  # it died mid-message: handled below as a death
                    else:
                        worker.index = None
                        yield done_index, records
                        continue
                if not worker.process.is_alive():
                    worker.process.join()
                    reason = death(worker.process.exitcode)
                elif case_timeout and time.monotonic() - worker.started > case_timeout:
                    reason = f"timed out after {case_timeout:g} s: the worker was stopped (a hang?)"
                else:
                    continue
                pool.retire(worker)
                item = cases[index]
                yield index, recorder.unfinished(item if isinstance(item, Case) else item.case, reason)
                if pending or any(w.index is not None for w in pool.workers):
                    pool.start()
    finally:
        pool.close()


@dataclass
class Progress:
    """Cases done of the total, elapsed and left: a bar on a terminal, a plain line every 15 s elsewhere."""

    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    _last: float = 0.0
    _bar: Any = None

    def __post_init__(self) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc="cases", unit="case", file=sys.stderr)

    def update(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update()
            return
        now = time.monotonic()
        if now - self._last >= 15 or self.done == self.total:
            self._last = now
            elapsed = now - self.started
            left = elapsed / self.done * (self.total - self.done)
            print(
                f"conformance: {self.done}/{self.total} cases ({100 * self.done // max(self.total, 1)}%), "
                f"{elapsed:.0f}s elapsed, about {left:.0f}s left",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
