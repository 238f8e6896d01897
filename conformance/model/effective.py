"""The suite's own arithmetic: adapter values, effective matrices from adapter tensors, and matrix probes.

Nothing here calls PEFT's merge code: effective weights come from the adapter tensors and the recipe, so
the reference model is independent of the library under test.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import torch

from conformance.model.recipes import EMBED, HEAD, Recipe

# PEFT's parameter naming (the same names its adapter checkpoints use).
_LORA = re.compile(r"(?P<path>.+)\.(?P<kind>lora_A|lora_B)\.(?P<adapter>[^.]+)\.weight")
_LORA_EMB = re.compile(r"(?P<path>.+)\.(?P<kind>lora_embedding_A|lora_embedding_B)\.(?P<adapter>[^.]+)")
_COPY = re.compile(r"(?P<path>.+)\.modules_to_save\.(?P<adapter>[^.]+)\.weight")
_TOKENS = re.compile(r"(?P<path>.+)\.token_adapter\.trainable_tokens_delta\.(?P<adapter>[^.]+)")
_PREFIX = "base_model.model."
ADAPTER_SCALE = 0.1


def _stable_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def fill_adapter(model: torch.nn.Module, seed: int) -> int:
    """Add seeded noise, derived from each parameter's name, to every trainable tensor.

    LoRA B starts at zero and copies start equal to the base, so without this every check would pass
    vacuously. Noise is added in place, so tensors a library shares stay shared. Returns the count.
    """
    count = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            gen = torch.Generator().manual_seed(_stable_seed(seed, name))
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float64)
            param.add_(noise.to(param.device, param.dtype) * ADAPTER_SCALE)
            count += 1
    return count


def output_logits(output: Any) -> torch.Tensor:
    """Logits from a forward's output: an HF output object, or a bare tensor (nemo-automodel 0.4 Gemma4)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def forward(model: torch.nn.Module, ids: torch.Tensor) -> Any:
    """The model's forward on `ids`; an encoder–decoder's decoder reads the same ids, so every name of
    its tie group (encoder, decoder and head) reaches the logits."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return model(input_ids=ids, decoder_input_ids=ids)
    return model(input_ids=ids)


def train_step(model: torch.nn.Module, input_ids: torch.Tensor, lr: float = 0.05) -> float:
    """One plain SGD step on next-token loss: a training-like update of every trainable tensor."""
    params = [p for p in model.parameters() if p.requires_grad]
    input_ids = input_ids.to(params[0].device) if params else input_ids
    with torch.enable_grad():
        logits = output_logits(forward(model, input_ids))
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1)
        )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for param, grad in zip(params, grads, strict=True):
            if grad is not None:
                param.sub_(grad.to(param.dtype) * lr)
    return float(loss)


@dataclass
class AdapterTensors:
    """The adapter tensors found for one wrapped module of the base model."""

    lora: dict[str, torch.Tensor]
    copy: torch.Tensor | None = None
    tokens: torch.Tensor | None = None


def collect(peft_model: torch.nn.Module, adapter: str = "default") -> dict[str, AdapterTensors]:
    """Adapter tensors by base-model module path, read from parameter names (shared ones included)."""
    found: dict[str, AdapterTensors] = {}
    for name, param in peft_model.named_parameters(remove_duplicate=False):
        name = name.removeprefix(_PREFIX)
        for pattern in (_LORA, _LORA_EMB, _COPY, _TOKENS):
            match = pattern.fullmatch(name)
            if match is None or match["adapter"] != adapter:
                continue
            entry = found.setdefault(match["path"], AdapterTensors({}))
            value = param.detach().to(torch.float64)
            if pattern is _COPY:
                entry.copy = value
            elif pattern is _TOKENS:
                entry.tokens = value
            else:
                entry.lora[match["kind"]] = value
            break
    return found


def own_weight(
    base: torch.Tensor, found: AdapterTensors, scaling: float, rows: list[int] | None
) -> torch.Tensor:
    """Effective matrix of one module from its own adapter tensors (float64)."""
    weight = base.to(torch.float64)
    if found.copy is not None:
        weight = found.copy.clone()
    if "lora_embedding_A" in found.lora:
        a, b = found.lora["lora_embedding_A"], found.lora["lora_embedding_B"]  # (r, V), (H, r)
        weight = weight + (b @ a).T * scaling
    if "lora_A" in found.lora:
        a, b = found.lora["lora_A"], found.lora["lora_B"]  # (r, in), (out, r)
        weight = weight + b @ a * scaling
    if found.tokens is not None and rows is not None:
        weight = weight.clone()
        weight[torch.tensor(rows)] = found.tokens
    return weight


def effective_weights(
    found: dict[str, AdapterTensors],
    base: dict[str, torch.Tensor],
    recipe: Recipe,
    embed_path: str,
    head_path: str,
    tied: bool,
) -> dict[str, torch.Tensor]:
    """Effective weights (float64) by state-dict key, for every module an adapter wraps plus both tied layers.

    This encodes PEFT's documented rules, not what the library did: a tied layer the recipe does not
    touch keeps its base matrix even if adapter tensors appear on it; on a tied model whose recipe is
    documented as `shared`, both layers take one matrix, the embedding's own if the recipe touches the
    embedding, else the head's.
    """
    rows = recipe.token_indices()
    layers = {embed_path: EMBED, head_path: HEAD}
    shared = tied and recipe.on_tied_model == "shared"
    out: dict[str, torch.Tensor] = {}
    for path, tensors in found.items():
        layer = layers.get(path)
        if layer is not None and layer not in recipe.touches:
            continue  # untouched: the base matrix, or (shared) the other layer's, decided below
        # The input embedding's rows whatever it is called (T5's and BART's is `shared`).
        layer_rows = rows.get(layer or path.split(".")[-1])
        if tensors.tokens is not None and layer_rows is None:
            continue  # trainable tokens without rows of their own: only a shared tie explains them
        out[f"{path}.weight"] = own_weight(base[f"{path}.weight"], tensors, recipe.scaling, layer_rows)
    embed_key, head_key = f"{embed_path}.weight", f"{head_path}.weight"
    embed = out.get(embed_key, base[embed_key].to(torch.float64))
    head = out.get(head_key, base[head_key].to(torch.float64))
    if shared:
        embed = head = embed if embed_key in out else head
    out[embed_key], out[head_key] = embed, head
    return out


def embed_scale(embedding: torch.nn.Module) -> torch.Tensor | float:
    """The factor a scaled embedding (Gemma) multiplies rows by, found inside any wrapper; else 1."""
    for module in embedding.modules():
        scale = getattr(module, "embed_scale", None)
        if scale is not None:
            return scale.to(torch.float64) if isinstance(scale, torch.Tensor) else float(scale)
    return 1.0


def probe(model: torch.nn.Module, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The matrices a model really uses: embedding rows for every token, and the head applied to a basis.

    Probing through forward works for any wrapper, so it measures behaviour, not storage. Rows are
    divided by the model's own embedding scale (a reloaded model recomputes it in its own precision).
    """
    with torch.no_grad():
        emb = model.get_input_embeddings()
        where = next(emb.parameters()).device
        rows = emb(torch.arange(vocab_size, device=where)).to(torch.float64) / embed_scale(emb)
        head = model.get_output_embeddings()
        hidden = rows.shape[-1]
        weight = next(head.parameters())
        cols = head(torch.eye(hidden, dtype=weight.dtype, device=weight.device)).to(torch.float64).T
    return rows.cpu(), cols.cpu()


def tie_gap(model: torch.nn.Module, vocab_size: int) -> float:
    """max |effective input matrix - effective output matrix|; 0 for a model that behaves tied."""
    return gap(probe(model, vocab_size))


def gap(matrices: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The tie gap of probed matrices (see `probe`)."""
    rows, cols = matrices
    return float((rows - cols).abs().max())


def module_path(model: torch.nn.Module, module: torch.nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise LookupError("module not found in model")


__all__ = [
    "EMBED",
    "HEAD",
    "AdapterTensors",
    "collect",
    "effective_weights",
    "fill_adapter",
    "module_path",
    "probe",
    "tie_gap",
    "train_step",
]
