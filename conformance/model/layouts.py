"""Checkpoint layouts: the subsets of a tie group's keys real checkpoints carry, loaded under every flag.

Hub checkpoints do not all look like today's `save_pretrained`: a tied model saved by HF holds only the
embedding, some conversions hold only `lm_head.weight`, a fine-tune holds both with different values,
VL checkpoints name their tensors in one of two generations (`language_model.model.` before
transformers 4.52, `model.language_model.` after; 5.x writes some families in the old one),
and many config.json files omit one of the tie flags. Each layout is a workflow of `hf`: the case's model
is written in that layout with *distinct* values per key (head = embedding + a seeded offset), then
loaded by `from_pretrained`. The `layout-load` check wants every module to get the tensor of its own
key; a module whose key is absent gets, where the rule on the loaded config ties, the tensor of the key
it is tied to, and otherwise must be reported missing (never a silent random head).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from conformance.base import contract
from conformance.model import effective, oracles, pipeline
from conformance.model.families import Family
from conformance.model.oracles.base import Check, CheckContext, Measurement, diff
from conformance.model.pipeline import CaseRun, Workspace
from conformance.model.recipes import Recipe

LAYOUT_LOAD = "layout_load"  # LoadedLayout: what each module of the tie group got from the layout
MODULES = ("embedding", "head")


@dataclass(frozen=True)
class Layout:
    name: str
    about: str
    keys: tuple[str, ...]  # which of MODULES have their key in the checkpoint
    legacy: bool = False  # every key under the family's names of transformers < 4.52
    drop: str = ""  # the config.json flag left out: "top" or "text"
    # The embedding's values only under its other names (an encoder–decoder's per-stack
    # `encoder.embed_tokens` / `decoder.embed_tokens`), not under its own key, as T5 conversions
    # (google/madlad400, transformers #48154) hold them; "embedding" in `keys` then means those names,
    # and every one of them must load the embedding.
    aliases: str = ""  # "all" of those names, or only the "last" (the decoder's)


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("layout-both", "embedding and lm_head keys, with different values", ("embedding", "head")),
        Layout("layout-embed", "only the embedding's key (a tied model as HF saves it)", ("embedding",)),
        Layout("layout-head", "only lm_head.weight (some conversions of tied models)", ("head",)),
        Layout(
            "layout-legacy",
            "both keys, every tensor in the other generation of VL names (before/after transformers 4.52)",
            ("embedding", "head"),
            legacy=True,
        ),
        Layout(
            "layout-stack-names",
            "the embedding only under its per-stack names (encoder/decoder embed_tokens), and lm_head",
            ("embedding", "head"),
            aliases="all",
        ),
        Layout(
            "layout-decoder-name",
            "the embedding only as decoder.embed_tokens, and lm_head (T5 conversions: google/madlad400)",
            ("embedding", "head"),
            aliases="last",
        ),
        Layout(
            "layout-no-top-flag",
            "only the embedding's key; config.json without the top-level flag",
            ("embedding",),
            drop="top",
        ),
        Layout(
            "layout-no-text-flag",
            "only the embedding's key; text_config without its flag",
            ("embedding",),
            drop="text",
        ),
    )
}


@dataclass(frozen=True)
class LoadedLayout:
    """Per module: its key, whether the layout holds it, and the written tensors it was compared with."""

    keys: dict[str, str]  # module -> its checkpoint key (as written)
    params: dict[str, str]  # module -> its parameter's name in the loaded model (missing keys use these)
    present: dict[str, bool]
    written: dict[str, torch.Tensor]  # module -> the values written under its key
    loaded: dict[str, torch.Tensor]  # module -> what from_pretrained gave it
    rule_tied: bool  # the HF rule on the config as loaded (absent flags at their defaults)
    missing: tuple[str, ...]  # from_pretrained's missing keys
    # The embedding's other names (layout-stack-names): parameter name -> what from_pretrained gave it.
    aliases: dict[str, torch.Tensor] = field(default_factory=dict)
    alias_keys: tuple[str, ...] = ()  # which of those names the checkpoint holds


contract.declare(
    artifacts=(LAYOUT_LOAD,),
    workflows=tuple(
        contract.workflow(
            name, f"{layout.about} -> from_pretrained", LAYOUT_LOAD, standalone=False, tie_states=False
        )
        for name, layout in LAYOUTS.items()
    ),
    checks={"layout-load": (LAYOUT_LOAD,)},
)


def _layout_load(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    got: LoadedLayout = art[LAYOUT_LOAD]
    problems, worst = [], 0.0

    def expect(what: str, source: str, want: torch.Tensor, loaded: torch.Tensor) -> None:
        nonlocal worst
        gap = diff(want, loaded)
        worst = max(worst, gap)
        if gap != 0:
            problems.append(f"{what} is not the checkpoint's {source} (max |Δ| {gap:.3g})")

    def absent(key: str, param: str) -> None:
        if param not in got.missing:
            problems.append(f"{key} is not in the checkpoint, the rule unties it, yet no missing key says so")

    # The embedding's other names (layout-stack-names, -decoder-name): each written one loads the
    # embedding's values; an absent one is, where the rule ties, the embedding too, else reported missing.
    for name, tensor in got.aliases.items():
        if name in got.alias_keys or got.rule_tied:
            expect(name, got.keys["embedding"], got.written["embedding"], tensor)
        else:
            absent(name, name)
    for module, partner in zip(MODULES, reversed(MODULES), strict=True):
        key = got.keys[module]
        if got.present[module] or (got.rule_tied and module == "embedding" and got.alias_keys):
            source, want = key, got.written[module]  # its key, or (tied) its other names
        elif got.rule_tied:  # tied by the rule: the tensor of the key it is tied to
            source, want = got.keys[partner], got.written[partner]
        else:
            absent(key, got.params[module])
            continue
        expect(f"the {module}", source, want, got.loaded[module])
    rule = "tied" if got.rule_tied else "untied"
    return Measurement(
        not problems, worst, "; ".join(problems) or f"each module got its tensor ({rule} by the rule)"
    )


oracles.register(
    Check(
        "layout-load",
        "a checkpoint layout loads each module from its own key, or from the key the rule ties it to",
        _layout_load,
        numeric=False,
    )
)


def pointless(family: Family, flags: Any, workflow: str) -> str | None:
    """Why a layout has nothing to say for this family and flags (the case is skipped), or None."""
    layout = LAYOUTS[workflow]
    if (layout.legacy or layout.drop == "text") and not family.nested:
        return f"{workflow} concerns configs with a text_config; {family.name} has one flag"
    if layout.aliases and not family.embedding_aliases:
        return f"{family.name} has no other name for its embedding"
    if layout.legacy and not family.legacy_prefixes:
        return f"{family.name} has no checkpoint layout older than today's in the suite"
    dropped = {"top": flags.top, "text": flags.text}.get(layout.drop, True)
    if not dropped:
        return f"{workflow} leaves that flag out of config.json: its value is moot (the True case runs it)"
    return None


def _legacy(key: str, family: Family, forward: bool) -> str:
    """A key in the other generation of names: today's -> older (forward) or older -> today's."""
    for new, old in family.legacy_prefixes:
        source, target = (new, old) if forward else (old, new)
        if key.startswith(source):
            return target + key[len(source) :]
    return key


@dataclass(frozen=True)
class Written:
    """What `write` put in a layout's checkpoint."""

    keys: dict[str, str]  # module -> its key (the embedding's: every name it was written under, joined)
    values: dict[str, torch.Tensor]  # module -> the values written for it
    alias_keys: tuple[str, ...] = ()  # the embedding's other names that hold its values (stack names)


def write(
    model: torch.nn.Module, natural: Path, out: Path, layout: Layout, family: Family, seed: int
) -> Written:
    """The model saved by save_pretrained with a head of distinct values (`natural`: HF names every key
    as its release writes them), then rewritten in `layout`."""
    from safetensors.torch import load_file, save_file

    embedding = model.get_input_embeddings().weight.detach().cpu().clone()
    offset = torch.randn(embedding.shape, generator=torch.Generator().manual_seed(seed + 104729))
    values = {"embedding": embedding, "head": embedding + (0.05 * offset).to(embedding.dtype)}
    model.get_output_embeddings().weight = torch.nn.Parameter(values["head"].clone().to(embedding.device))
    model.save_pretrained(natural)
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(natural.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    names = {}
    alias_keys: tuple[str, ...] = ()
    for module in MODULES:
        found = [
            k
            for k, v in tensors.items()
            if v.shape == values[module].shape and torch.equal(v, values[module])
        ]
        if len(found) != 1:
            raise RuntimeError(
                f"save_pretrained wrote {len(found)} tensors with the {module}'s values: {found}"
            )
        names[module] = found[0]
    for module in MODULES:
        if module not in layout.keys:
            tensors.pop(names[module])
    if layout.aliases:  # the embedding's own key out; `written` holds its values under its other names
        tensors.pop(names["embedding"])
        for alias in family.embedding_aliases:  # an untied BART of 5.x wrote values of their own there
            tensors.pop(f"{alias}.weight", None)
        written = family.embedding_aliases[-1:] if layout.aliases == "last" else family.embedding_aliases
        alias_keys = tuple(f"{alias}.weight" for alias in written)
        tensors.update({key: values["embedding"].clone() for key in alias_keys})
        names["embedding"] = ", ".join(alias_keys)
    if layout.legacy:  # the other generation of names than this release writes
        forward = not any(names["embedding"].startswith(old) for _, old in family.legacy_prefixes)
        tensors = {_legacy(k, family, forward): v for k, v in tensors.items()}
        names = {m: _legacy(k, family, forward) for m, k in names.items()}
    out.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), {"format": "pt"}
    )
    for extra in natural.iterdir():
        if extra.suffix == ".py":  # remote code travels with its checkpoint
            shutil.copy(extra, out / extra.name)
    config = json.loads((natural / "config.json").read_text())
    if layout.drop == "top":
        config.pop("tie_word_embeddings", None)
    elif layout.drop == "text":
        config.get("text_config", {}).pop("tie_word_embeddings", None)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return Written(names, {m: values[m] for m in layout.keys}, alias_keys)


def steps(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
    """build -> save_pretrained -> rewrite in the case's layout -> from_pretrained."""
    case, family = run.case, run.case.family_def()
    layout = LAYOUTS[case.workflow]
    with run.step("build"):
        model = family.build(case.config, case.flags, case.seed, dtype)
    with run.step("write"):
        written = write(model, folder / "natural", folder / "layout", layout, family, case.seed)
    with run.step("load"):
        torch.manual_seed(case.seed)  # a missing weight is drawn from the global RNG
        loaded, info = pipeline.load_hf(folder / "layout", family, dtype, output_loading_info=True)
        modules = dict(
            zip(MODULES, (loaded.get_input_embeddings(), loaded.get_output_embeddings()), strict=True)
        )
        params = {m: f"{effective.module_path(loaded, module)}.weight" for m, module in modules.items()}
        run.put(
            LAYOUT_LOAD,
            LoadedLayout(
                keys=written.keys,
                params=params,
                present={
                    m: m in written.values and not (m == "embedding" and layout.aliases) for m in MODULES
                },
                written=written.values,
                loaded={m: module.weight.detach().cpu() for m, module in modules.items()},
                rule_tied=family.expected_tied(family.flags_of(loaded.config)),
                missing=tuple(info.get("missing_keys", ())),
                aliases={
                    f"{alias}.weight": loaded.get_submodule(alias).weight.detach().cpu()
                    for alias in (family.embedding_aliases if layout.aliases else ())
                },
                alias_keys=written.alias_keys,
            ),
        )
