"""A t-wise cover of a plan: the fewest cases (greedily) in which every t-way combination of axis values
that the whole plan has still occurs at least once.

Tie bugs are interactions of a few axes: a recipe under a tie state (`apart-ewt-ties-by-config`), a
family's loader under a workflow (#45857), a precision with an adapter kind. A case is a point in
implementation × family × tie flags and state × recipe × workflow × precision; a 3-wise cover keeps every
triple of those values, so every bug that needs at most three of them to show is still hit, by about a
third of the cases (measured on the newest releases, every tie state: 3897 of the 11739 cases that run,
hitting 116 of the 120 implementation × check × expectation groups the whole run hits; README, Covers).

The nightly's rows run a 3-wise cover (`cover` in cases/matrix.toml), the PR gate one by default; the
full space is `--cover 0` (`CONFORMANCE_COVER=0 tox -m nightly`, a weekly schedule). The cover is a
function of the plan alone, so two runs of one selection (the gate's two sides, one row on two nights)
run the same cases. Fixed as combinatorial testing defines it (Kuhn, Kacker, Lei: "Introduction to
Combinatorial Testing"): strength t, greedy one-case-at-a-time construction.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence

from conformance.base.errors import ConformanceError
from conformance.model.cases import Case

# Each axis of a case, as its id names it. The tie state is part of the flags id (tT-xF-apart); the
# config is the tiny config and seed after '@' (one per family under the ci profile, more under nightly).
AXES = ("implementation", "family", "flags", "recipe", "workflow", "precision", "config")


def values(case: Case) -> tuple[object, ...]:
    return (
        case.implementation,
        case.family,
        case.flags.id,
        case.recipe,
        case.workflow,
        case.precision.id,
        (case.knobs, case.seed),
    )


def check_strength(strength: int) -> None:
    if strength < 0 or strength > len(AXES):
        raise ConformanceError(
            f"--cover: {strength} is not a strength; 0 runs every case, 1..{len(AXES)} a t-wise cover"
        )


def select(
    planned: Sequence[Case], strength: int, runs: Callable[[Case], bool] = lambda case: True
) -> list[Case]:
    """The cases of a greedy `strength`-wise cover of `planned`, in plan order; 0 or a strength of every
    axis: the whole plan. Deterministic: ties go to the earlier case in the plan.

    Only the cases that `runs` (those not skipped here) cover anything: a combination held by a skipped
    case alone is still wanted from a case that runs. Skipped cases are all kept; they cost nothing and
    their records say why.
    """
    check_strength(strength)
    if strength == 0 or strength >= len(AXES):
        return list(planned)
    running = [i for i, case in enumerate(planned) if runs(case)]
    kept = set(range(len(planned))) - set(running)
    kept.update(running[i] for i in _greedy([planned[i] for i in running], strength))
    return [planned[i] for i in sorted(kept)]


def _greedy(planned: Sequence[Case], strength: int) -> list[int]:
    """Indexes into `planned` of a greedy cover of its `strength`-way combinations."""
    # Each t-way combination as one int: fewer allocations than tuples of (axis, value) pairs.
    ids: dict[tuple, int] = {}
    combos: list[frozenset[int]] = []
    for case in planned:
        point = values(case)
        combos.append(
            frozenset(
                ids.setdefault((axes, tuple(point[a] for a in axes)), len(ids))
                for axes in itertools.combinations(range(len(AXES)), strength)
            )
        )
    uncovered = set(ids.values())
    # Lazy greedy: a case's gain only falls as others are chosen, so a stale top is recomputed and pushed
    # back until the top of the heap is current.
    heap = [(-len(found), index) for index, found in enumerate(combos)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while uncovered and heap:
        _, index = heapq.heappop(heap)
        gain = len(combos[index] & uncovered)
        if gain == 0:
            continue
        if heap and (-gain, index) > heap[0]:
            heapq.heappush(heap, (-gain, index))
            continue
        chosen.append(index)
        uncovered -= combos[index]
    return chosen
