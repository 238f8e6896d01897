"""Running planned cases: in this process, or in forked workers on several cores, results in plan order."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from conformance.cases import Case
from conformance.errors import ConformanceError
from conformance.expectations import ExpectationSet
from conformance.pipeline import Workspace
from conformance.results import Record
from conformance.runner import Engine, Selection

_WORKER: Engine | None = None


def default_jobs() -> int:
    # Tiny models gain nothing from intra-op threads; one process per core is what scales.
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4))


def _start_worker(selection: Selection, root: str) -> None:
    global _WORKER
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(dir=root, prefix="worker-"))
    # Expectations are matched in the parent, which sees every record.
    _WORKER = Engine(selection, Workspace(folder), ExpectationSet([]))


def _judge(case: Case) -> list[Record]:
    assert _WORKER is not None
    return _WORKER.judge(case)


def judge_all(
    cases: list[Case], selection: Selection, jobs: int, progress: bool = True
) -> Iterator[list[Record]]:
    """Records of each case, in the order of `cases`."""
    from tqdm import tqdm

    bar = tqdm(
        total=len(cases), desc="cases", unit="case", disable=None if progress else True, file=sys.stderr
    )
    root = tempfile.mkdtemp(prefix="conformance-")
    try:
        if jobs <= 1 or len(cases) < 2 * jobs:
            _start_worker(selection, root)
            for case in cases:
                yield _judge(case)
                bar.update()
            return
        # fork: workers inherit the imported libraries and the parsed data files, so they start at once.
        # The parent has run no torch computation yet, so no thread pool is forked half-alive.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_start_worker, initargs=(selection, root)
        ) as pool:
            try:
                for records in pool.map(_judge, cases, chunksize=4):
                    yield records
                    bar.update()
            except BrokenProcessPool:
                # Every Python exception is recorded per case; only a crash of the process itself
                # (a segfault in native code) lands here.
                raise ConformanceError(
                    "a worker process died while running cases (a crash in native code?); "
                    "rerun with --jobs 1 to see which case"
                ) from None
    finally:
        bar.close()
        shutil.rmtree(root, ignore_errors=True)
