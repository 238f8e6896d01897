"""Hypothesis strategies for tiny configs that respect each architecture's rules, and the profiles."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from conformance.model.families import Family, Knobs

# Generated configs per family that `conformance run` adds to the canonical one. The `ci` gate runs the
# canonical configs only, to stay within a minute on two cores; `tox -e tests` still runs the
# derandomized hypothesis property tests over generated configs.
CONFIGS_PER_FAMILY = {"dev": 1, "ci": 0, "nightly": 8}

settings.register_profile("dev", max_examples=5, deadline=None)
# Derandomized and without a database: the gate gives the same cases on every machine.
settings.register_profile(
    "ci", max_examples=10, deadline=None, derandomize=True, database=None, print_blob=True
)
settings.register_profile("nightly", max_examples=100, deadline=None)

_QUIET = list(HealthCheck)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def _attention(draw: st.DrawFn, head_dims: list[int], kv_default_is_heads: bool) -> Knobs:
    heads = draw(st.sampled_from([1, 2, 4]), label="num_attention_heads")
    knobs = {
        "vocab_size": draw(st.integers(32, 160), label="vocab_size"),
        "intermediate_size": draw(st.integers(8, 96), label="intermediate_size"),
        "num_hidden_layers": draw(st.integers(1, 3), label="num_hidden_layers"),
        "num_attention_heads": heads,
        "head_dim": draw(st.sampled_from(head_dims), label="head_dim"),
    }
    # Where the config class defaults kv heads to the head count (Llama), sometimes leave it out so the
    # default is exercised too; Gemma's default (16) would not fit a tiny model.
    if not kv_default_is_heads or draw(st.booleans(), label="set num_key_value_heads"):
        knobs["num_key_value_heads"] = draw(st.sampled_from(_divisors(heads)), label="num_key_value_heads")
    return knobs


@st.composite
def llama(draw: st.DrawFn, kv_default_is_heads: bool = True) -> Knobs:
    knobs = draw(_attention([4, 8, 16], kv_default_is_heads=kv_default_is_heads))
    # Llama derives head_dim from hidden / heads; rotary needs it even.
    knobs["hidden_size"] = knobs.pop("head_dim") * knobs["num_attention_heads"]
    return knobs


@st.composite
def gemma(draw: st.DrawFn) -> Knobs:
    knobs = draw(_attention([4, 8, 16], kv_default_is_heads=False))
    knobs["hidden_size"] = draw(st.sampled_from([8, 16, 24, 32, 48]), label="hidden_size")
    return knobs


@st.composite
def gemma4(draw: st.DrawFn, moe: bool = False) -> Knobs:
    knobs = draw(_attention([4, 8, 16], kv_default_is_heads=False))
    knobs["hidden_size"] = draw(st.sampled_from([8, 16, 32, 48]), label="hidden_size")
    # Full-attention layers use proportional rope with a quarter of global_head_dim: keep it even.
    knobs["global_head_dim"] = draw(st.sampled_from([8, 16, 32]), label="global_head_dim")
    knobs["sliding_window"] = draw(st.integers(2, 16), label="sliding_window")
    knobs["full_every"] = draw(st.integers(1, knobs["num_hidden_layers"]), label="full_every")
    if moe:
        experts = draw(st.integers(2, 6), label="num_experts")
        knobs["num_experts"] = experts
        knobs["top_k_experts"] = draw(st.integers(1, experts), label="top_k_experts")
        knobs["moe_intermediate_size"] = draw(st.integers(8, 48), label="moe_intermediate_size")
    return knobs


@st.composite
def sliding(draw: st.DrawFn) -> Knobs:
    knobs = draw(gemma())
    knobs["sliding_window"] = draw(st.integers(2, 16), label="sliding_window")
    return knobs


@st.composite
def hybrid(draw: st.DrawFn) -> Knobs:
    """Qwen3.5: a full-attention layer every `full_every` layers (and last), linear attention between."""
    knobs = draw(gemma())
    knobs["full_every"] = draw(st.integers(1, knobs["num_hidden_layers"]), label="full_every")
    return knobs


@st.composite
def multimodal(draw: st.DrawFn, own_head_dim: bool = False, full_every: bool = False) -> Knobs:
    """The text decoder of a multimodal wrapper: heads of 8 or 16, so Qwen's multimodal rotary sections
    (temporal, height, width) each get a part of every head."""
    knobs = draw(_attention([8, 16], kv_default_is_heads=False))
    if own_head_dim:
        knobs["hidden_size"] = draw(st.sampled_from([16, 32, 48]), label="hidden_size")
    else:
        knobs["hidden_size"] = knobs.pop("head_dim") * knobs["num_attention_heads"]
    if full_every:
        knobs["full_every"] = draw(st.integers(1, knobs["num_hidden_layers"]), label="full_every")
    return knobs


@st.composite
def gemma3(draw: st.DrawFn) -> Knobs:
    knobs = draw(multimodal(own_head_dim=True))
    knobs["sliding_window"] = draw(st.integers(2, 16), label="sliding_window")
    return knobs


@st.composite
def seq2seq(draw: st.DrawFn) -> Knobs:
    """An encoder–decoder: Llama's sizes (hidden = head_dim x heads), without kv heads of its own."""
    knobs = draw(llama())
    knobs.pop("num_key_value_heads", None)
    return knobs


STRATEGIES: dict[str, Callable[[], st.SearchStrategy[Knobs]]] = {
    "llama": llama,
    "llama-remote": llama,
    # Llama's constraints, except that these configs default kv heads to a constant, not the head count.
    "qwen2": lambda: llama(kv_default_is_heads=False),
    "mistral": lambda: llama(kv_default_is_heads=False),
    # A head_dim of its own, independent of hidden / heads.
    "qwen3": gemma,
    "gemma": gemma,
    "gemma2": sliding,
    "gemma3-text": sliding,
    "qwen3.5": hybrid,
    "gemma4": gemma4,
    "gemma4-moe": lambda: gemma4(moe=True),
    "qwen2-vl": multimodal,
    "qwen2.5-vl": multimodal,
    "llava": multimodal,
    "qwen2-audio": multimodal,
    "qwen3-vl": lambda: multimodal(own_head_dim=True),
    "mistral3": lambda: multimodal(own_head_dim=True),
    "ministral3": lambda: multimodal(own_head_dim=True),
    "qwen3.5-vl": lambda: multimodal(own_head_dim=True, full_every=True),
    "gemma3": gemma3,
    "t5": seq2seq,
    "mt5": seq2seq,
    "bart": seq2seq,
}


def knobs_for(family: Family) -> st.SearchStrategy[Knobs]:
    return STRATEGIES[family.name]()


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**16 - 1)


def draw_configs(family: Family, profile: str, run_seed: int) -> list[tuple[Knobs, int]]:
    """The canonical config with the run's seed, then the profile's number of generated ones.

    Under `ci` the draw is derandomized (same cases everywhere); otherwise `run_seed` seeds it.
    """
    wanted = CONFIGS_PER_FAMILY[profile]
    found: list[tuple[Knobs, int]] = [(dict(family.canonical), run_seed)]
    if wanted == 0:
        return found

    base = settings.get_profile(profile)

    @settings(base, max_examples=wanted, phases=[Phase.generate], suppress_health_check=_QUIET, database=None)
    @given(st.tuples(knobs_for(family), seeds()))
    def collect(example: tuple[Knobs, int]) -> None:
        if example not in found and len(found) <= wanted:
            found.append(example)

    if not base.derandomize:
        collect = seed(run_seed)(collect)
    collect()
    return found
