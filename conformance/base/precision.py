"""The precision axis: the dtype a case builds, merges, saves and reloads in, and PEFT's autocast flag.

float32 is the default and leaves ids as they were; a half-precision case's cell id ends in `-bf16` or
`-fp16`, and `-noautocast` where PEFT's `autocast_adapter_dtype` (on by default: adapter tensors upcast
to float32 over a half-precision base) was switched off. Imports nothing heavy: the pages read it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT = "float32"
HALF = ("bfloat16", "float16")
DTYPES = (DEFAULT, *HALF)
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_LONG = {short: name for name, short in SHORT.items()}
NO_AUTOCAST = "noautocast"
# What a cell id ends with, after its workflow: "", "-bf16", "-fp16-noautocast", ...
ID_PATTERN = rf"(?:-(?P<dtype>{'|'.join(SHORT[d] for d in HALF)})(?P<noautocast>-{NO_AUTOCAST})?)?"
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, order=True)
class Precision:
    """`dtype`: the case's working precision; `autocast`: PEFT's autocast_adapter_dtype, where the case
    has that axis (half precision, an implementation that wraps with PEFT), else None."""

    dtype: str = DEFAULT
    autocast: bool | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")
        if self.autocast is not None and self.dtype not in HALF:
            raise ValueError("autocast is an axis of half-precision cases only")

    @property
    def id(self) -> str:
        """The cell-id suffix: empty for float32, so float32 ids stay as they were."""
        if self.dtype == DEFAULT:
            return ""
        return f"-{SHORT[self.dtype]}" + (f"-{NO_AUTOCAST}" if self.autocast is False else "")

    @property
    def label(self) -> str:
        """For pages and terminals: fp32, bf16, bf16 no-autocast."""
        return SHORT[self.dtype] + (" no-autocast" if self.autocast is False else "")

    @property
    def half(self) -> bool:
        return self.dtype in HALF

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    @classmethod
    def parse(cls, suffix: str) -> Precision:
        """The inverse of `id` (a cell id's tail after its workflow)."""
        match = _ID.fullmatch(suffix)
        if match is None:
            raise ValueError(f"not a precision suffix: {suffix!r} (expected '', -bf16, -fp16-noautocast...)")
        if match["dtype"] is None:
            return cls()
        # A parsed half-precision id names autocast only when off; on is the default (and PEFT's).
        return cls(_LONG[match["dtype"]], not match["noautocast"])

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Precision:
        """A results record's precision; records written before the axis existed are float32."""
        dtype = record.get("dtype")
        return cls(dtype, record.get("autocast")) if dtype in HALF else cls()


FLOAT32 = Precision()  # the default case's precision


# --autocast: which of PEFT's autocast_adapter_dtype settings half-precision cases run. `on` (PEFT's
# default, what users get) by default: `both` doubles every half-precision PEFT case.
AUTOCAST_CHOICES = {"on": (True,), "off": (False,), "both": (True, False)}


def variants(dtype: str, autocast_axis: bool, autocast: str = "both") -> list[Precision]:
    """The precisions a case of `dtype` runs in: the chosen autocast settings (`AUTOCAST_CHOICES`) where
    the implementation wraps with PEFT and the dtype is half precision, else one."""
    if dtype in HALF and autocast_axis:
        return [Precision(dtype, setting) for setting in AUTOCAST_CHOICES[autocast]]
    return [Precision(dtype)]


def parse_dtypes(names: list[str], where: str) -> list[str]:
    """--dtype values (long or short names, each once), in the order given; float32 when none."""
    from conformance.base.errors import ConformanceError

    found: list[str] = []
    for name in names:
        long = _LONG.get(name, name)
        if long not in DTYPES:
            raise ConformanceError(f"{where}: unknown dtype {name!r}; known: {', '.join(DTYPES)}")
        if long not in found:
            found.append(long)
    return found or [DEFAULT]
