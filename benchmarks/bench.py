"""Suite overhead: N cases through the engine vs the same library steps in a bare loop, in one process.

    python benchmarks/bench.py [--family gemma4] [--dtype bfloat16] [--device cuda] [--cases 40] [--repeat 3]

The bare loop is what one would write by hand for each case: build the model, wrap it, fill and train
the adapter, run the reference and measure its noise floor in float64 (what a tolerance in the case's
precision needs), merge, save, reload and compare logits, with no warning capture, no outcome
classification, no records and no caching. Both sides run single-process, interleaved, after a warm-up;
the best of `--repeat` rounds is reported. Target: suite / bare <= 1.3.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from conformance.base import device, outcomes
from conformance.engine.core import Engine, Selection, plan
from conformance.model import effective, families, oracles, recipes
from conformance.model.pipeline import Workspace, inputs, logits, untied_flags


def bare_case(case, dtype: torch.dtype, folder: Path) -> float:
    """The merge workflow by hand; returns the largest logit difference so nothing is optimised away."""
    warnings.simplefilter("ignore")
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    family, recipe = families.get(case.family), recipes.load().get(case.recipe)
    base = family.build(case.config, case.flags, case.seed, dtype)
    vocab = base.config.get_text_config().vocab_size
    ids = inputs(vocab, case.seed)
    embed = effective.module_path(base, base.get_input_embeddings())
    head = effective.module_path(base, base.get_output_embeddings())
    base_logits = logits(base, ids)
    base_weights = {k: v.detach().clone() for k, v in base.state_dict().items()}
    torch.manual_seed(case.seed)
    autocast = {} if case.precision.autocast is None else {"autocast_adapter_dtype": case.precision.autocast}
    try:
        model = get_peft_model(base, recipe.peft_config(), **autocast).eval()
    except ValueError:  # a documented refusal: the suite stops there too
        return 0.0
    effective.fill_adapter(model, case.seed)
    effective.tie_gap(model, vocab)
    effective.train_step(model, ids)
    effective.tie_gap(model, vocab)
    unmerged_logits = logits(model, ids)
    weights = effective.effective_weights(
        effective.collect(model), base_weights, recipe, embed, head, family.expected_tied(case.flags)
    )
    reference = family.build(case.config, untied_flags(family), case.seed, dtype)
    reference.load_state_dict({**base_weights, **{k: v.to(dtype) for k, v in weights.items()}})
    reference_logits = logits(reference, ids)
    exact = copy.deepcopy(reference).to(torch.float64)
    floor = float((reference_logits - logits(exact, ids)).abs().max())
    effective.probe(reference, vocab), effective.probe(exact, vocab)
    merged = model.merge_and_unload()
    merged_logits = logits(merged, ids)
    effective.tie_gap(merged, vocab)
    merged.save_pretrained(folder)
    placed = {} if device.current() == "cpu" else {"device_map": device.current()}
    reloaded = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, **family.load_kwargs, **placed
    ).eval()
    reloaded_logits = logits(reloaded, ids)
    effective.tie_gap(reloaded, vocab)
    shutil.rmtree(folder, ignore_errors=True)
    return floor + max(
        float((unmerged_logits - other).abs().max())
        for other in (base_logits, reference_logits, merged_logits, reloaded_logits)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gemma4")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    outcomes.quiet_libraries()
    torch.set_num_threads(1)  # as the suite's workers run
    device.use(args.device)

    selection = Selection(
        families=[args.family], workflows=["merge"], dtypes=[args.dtype], device=args.device
    )
    family = families.get(args.family)
    half = args.dtype != "float32"
    chosen = [c for c in plan(selection) if c.config == family.knobs_for(family.canonical, half)][
        : args.cases
    ]
    dtype = oracles.tolerances().run_dtype(chosen[0].precision, args.family, "merge")
    root = Path(tempfile.mkdtemp(prefix="bench-"))

    def suite_round(reuse: bool) -> float:
        gc.collect()
        # A fresh engine: its caches start empty, as in a real run.
        engine = Engine(selection, Workspace(Path(tempfile.mkdtemp(dir=root)), reuse=reuse))
        started = time.perf_counter()
        for case in chosen:
            engine.records(case)
        elapsed = time.perf_counter() - started
        engine.close()
        return elapsed

    def bare_round() -> float:
        gc.collect()
        started = time.perf_counter()
        for i, case in enumerate(chosen):
            bare_case(case, dtype, root / f"case-{i}")
        return time.perf_counter() - started

    suite_round(True), bare_round()  # warm-up: imports, first-call caches, allocator
    rounds: dict[str, list[float]] = {"suite": [], "rebuilt": [], "bare": []}
    for _ in range(args.repeat):  # interleaved, so drift in the machine hits all three alike
        rounds["bare"].append(bare_round())
        rounds["suite"].append(suite_round(True))
        rounds["rebuilt"].append(suite_round(False))
    suite, rebuilt, bare = (min(rounds[k]) for k in ("suite", "rebuilt", "bare"))
    shutil.rmtree(root, ignore_errors=True)
    n = len(chosen)
    where = device.describe(args.device)
    print(
        f"{n} {args.family} merge cases in {args.dtype} on {where}, best of {args.repeat} rounds, one process"
    )
    print(f"  suite: {suite:6.2f} s  ({suite / n * 1000:6.1f} ms/case)")
    print(f"  suite, nothing reused: {rebuilt:6.2f} s  ({rebuilt / n * 1000:6.1f} ms/case)")
    print(f"  bare : {bare:6.2f} s  ({bare / n * 1000:6.1f} ms/case)")
    print(f"  ratio suite/bare: {suite / bare:.2f}  (target <= 1.30)")
    print(f"  ratio suite without reuse/bare: {rebuilt / bare:.2f}  (the engine's own overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
