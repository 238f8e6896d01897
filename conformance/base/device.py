"""The device axis of a run: where models, inputs and reference models live (cpu, or cuda for the GPU leg).

One process runs on one device, so it is process state, set once when an engine starts (`use`); every
model the pipeline builds or loads is placed with `place`, and logits come back to the CPU in float64.
Base weights are always drawn on the CPU from the case's seed and then moved, so a CUDA run tests the
same weights as a CPU run. Numerics that differ silently between machines (TF32 matmuls, reduced-precision
reductions in half-precision matmuls) are pinned off and recorded (`numerics`).
"""

from __future__ import annotations

from typing import Any

DEVICES = ("cpu", "cuda")
_current = "cpu"


def use(name: str) -> None:
    """Run this process's cases on `name` (cpu or cuda); pins the numerics of a CUDA device."""
    global _current
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")
    _current = name
    if name == "cuda" and unavailable(name) is None:
        pin()


def current() -> str:
    return _current


def unavailable(name: str) -> str | None:
    """Why `name` cannot run cases here (the CUDA leg is skipped with this reason), or None."""
    if name == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device here (torch {torch.__version__}: torch.cuda.is_available() is False)"
    return None


def pin() -> None:
    """TF32 and reduced-precision reductions off: float32 matmuls in full float32, half-precision ones
    accumulated in float32, as on the CPU. Recorded in run.json through `numerics`."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.set_float32_matmul_precision("highest")


def numerics() -> dict[str, Any]:
    """The numeric settings cases ran under (run.json): what makes a CUDA run comparable to a CPU run."""
    if _current != "cuda":
        return {}
    import torch

    matmul = torch.backends.cuda.matmul
    return {
        "matmul.allow_tf32": matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul.allow_fp16_reduced_precision_reduction": matmul.allow_fp16_reduced_precision_reduction,
        "matmul.allow_bf16_reduced_precision_reduction": matmul.allow_bf16_reduced_precision_reduction,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def describe(name: str | None = None) -> str:
    """`cpu`, or `cuda (NVIDIA H200)`: what every record and the run's header name."""
    name = name or _current
    if name == "cpu" or unavailable(name):
        return name
    import torch

    return f"{name} ({torch.cuda.get_device_name(0)})"


def place(model: Any) -> Any:
    """The model on this process's device (a no-op on the CPU)."""
    return model if _current == "cpu" else model.to(_current)
