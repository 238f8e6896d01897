"""The nightly matrix as data (cases/matrix.toml): named environments and cross-version pairs.

Read by tox's plugin (toxfile.py, in tox's own interpreter: standard library only, no package of the
suite's), by the nightly workflow's job matrix and by the timeline page, so the rows live in one place.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conformance.base import casesdir

if sys.version_info >= (3, 11):
    import tomllib
else:  # tox itself depends on tomli below 3.11
    import tomli as tomllib

_NAME = re.compile(r"[a-z0-9][a-z0-9.]*(-[a-z0-9.]+)*")
_ROW_FIELDS = {
    "name",
    "transformers",
    "peft",
    "nemo",
    "extra",
    "impl",
    "dtype",
    "autocast",
    "tie_states",
    "families",
    "workflows",
    "device",
    "runner",
    "why",
    "needs",
    "cover",
}
_DTYPES = (
    "float32",
    "bfloat16",
    "float16",
)  # conformance.base.precision's; this module stays standard-library only
_DEVICES = ("cpu", "cuda")
_AXES = 7  # len(conformance.engine.cover.AXES): the strongest cover, which is every case
DEFAULT_RUNNER = "ubuntu-latest"
_XVER_FIELDS = {"save", "load", "families", "why"}


class MatrixError(Exception):
    """A malformed matrix file: one line naming the entry and field."""


@dataclass(frozen=True)
class Row:
    name: str
    why: str
    transformers: str = ""  # "": the newest (a NeMo row: its pin)
    peft: str = ""
    nemo: str = ""
    extra: str = ""  # pip spec of one more package (another implementation's)
    impl: str = ""  # the implementations the row runs, comma-separated (default: hf, peft; NeMo's)
    dtype: str = ""  # the precisions it runs, comma-separated (default float32)
    autocast: str = ""  # PEFT's autocast_adapter_dtype in half precision: on (default), off or both
    tie_states: str = ""  # natural (default) or all: also each flag combination's other storage
    families: tuple[str, ...] = ()  # the families it runs (default every family)
    workflows: tuple[str, ...] = ()  # the workflows it runs (default every workflow of its implementations)
    device: str = ""  # cpu (default) or cuda
    runner: str = ""  # the nightly job's runner label (default ubuntu-latest; a GPU row names a GPU runner)
    needs: str = ""  # a host the specs download from
    cover: int = 0  # the strength of the t-wise cover it runs (conformance.engine.cover); 0: every case

    @property
    def implementations(self) -> list[str]:
        if self.impl:
            return [name.strip() for name in self.impl.split(",")]
        return ["nemo-automodel", "nemo-auto"] if self.nemo else ["hf", "peft"]

    @property
    def dtypes(self) -> list[str]:
        return [name.strip() for name in self.dtype.split(",") if name.strip()]

    def run_options(self) -> str:
        """The `run` options of the row's selection (empty for a default one: float32 on CPU, everything)."""
        options = [f"--dtype {name}" for name in self.dtypes]
        options += [f"--autocast {self.autocast}"] if self.autocast else []
        options += [f"--tie-states {self.tie_states}"] if self.tie_states else []
        options += [f"--family {name}" for name in self.families]
        options += [f"--workflow {name}" for name in self.workflows]
        options += [f"--device {self.device}"] if self.device else []
        return "".join(f" {option}" for option in options) + self.cover_option()

    def cover_option(self) -> str:
        """The row's --cover for `run` and `export`; CONFORMANCE_COVER, where set, rules every row instead
        (0: the weekly run of every case), and the commands read it themselves."""
        return f" --cover {self.cover}" if self.cover and not os.environ.get("CONFORMANCE_COVER") else ""

    def unreachable(self, timeout: float = 3.0) -> str | None:
        """Why this row cannot run here (its host does not answer, or it wants a GPU this machine has not),
        or None. Decided in tox's own interpreter, before an environment is built: no torch here."""
        if self.device == "cuda" and not gpu_present():
            return f"{self.name}: skipped, it runs on an NVIDIA GPU and this machine has none (no nvidia-smi)"
        if not self.needs:
            return None
        try:
            socket.create_connection((self.needs, 443), timeout=timeout).close()
        except OSError as exc:
            return f"{self.name}: skipped, {self.needs} cannot be reached from this machine ({exc})"
        return None


def gpu_present() -> bool:
    """An NVIDIA driver is installed (what a CUDA row's runner has); torch decides the rest in the run."""
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


@dataclass(frozen=True)
class Pair:
    save: str
    load: str
    why: str
    families: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"xver-{self.save}-to-{self.load}"


@dataclass(frozen=True)
class Matrix:
    rows: dict[str, Row]
    pairs: dict[str, Pair]


def load(path: Path | None = None) -> Matrix:
    """The matrix of `path`, by default matrix.toml of the cases/ folder conformance.casesdir finds."""
    try:
        path = path or casesdir.find() / "matrix.toml"
    except casesdir.CasesNotFound as exc:
        raise MatrixError(str(exc)) from None
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MatrixError(f"{path}: {exc}") from None
    cover = data.get("cover", 0)
    if not isinstance(cover, int) or isinstance(cover, bool) or not 0 <= cover <= _AXES:
        raise MatrixError(f"{path}:cover: expected a strength 0..{_AXES}, got {cover!r}")
    unknown = sorted(set(data) - {"cover", "row", "xver"})
    if unknown:
        raise MatrixError(f"{path}:{unknown[0]}: unknown key; allowed: cover, row, xver")
    rows: dict[str, Row] = {}
    for i, raw in enumerate(data.get("row", [])):
        where = f"{path}:row[{i}]"
        _fields(raw, _ROW_FIELDS, where, required=("name", "why"))
        if not _NAME.fullmatch(raw["name"]) or raw["name"] in rows:
            raise MatrixError(f"{where}.name: {raw['name']!r} is not a new name of a-z, 0-9, '.' and '-'")
        row = Row(
            **{
                "cover": cover,
                **raw,
                "families": tuple(raw.get("families", ())),
                "workflows": tuple(raw.get("workflows", ())),
            }
        )
        wrong = [name for name in row.dtypes if name not in _DTYPES]
        if wrong:
            raise MatrixError(f"{where}.dtype: unknown dtype {wrong[0]!r}; known: {', '.join(_DTYPES)}")
        if row.autocast and row.autocast not in ("on", "off", "both"):
            raise MatrixError(f"{where}.autocast: {row.autocast!r}; known: on, off, both")
        if row.tie_states and row.tie_states not in ("natural", "all"):
            raise MatrixError(f"{where}.tie_states: {row.tie_states!r}; known: natural, all")
        if not 0 <= row.cover <= _AXES:
            raise MatrixError(f"{where}.cover: expected a strength 0..{_AXES}, got {row.cover!r}")
        if row.device and row.device not in _DEVICES:
            raise MatrixError(f"{where}.device: unknown device {row.device!r}; known: {', '.join(_DEVICES)}")
        if row.device == "cuda" and not row.runner:
            raise MatrixError(f"{where}.runner: a cuda row needs the label of a runner with a GPU")
        rows[raw["name"]] = row
    pairs: dict[str, Pair] = {}
    for i, raw in enumerate(data.get("xver", [])):
        where = f"{path}:xver[{i}]"
        _fields(raw, _XVER_FIELDS, where, required=("save", "load", "why"))
        for side in ("save", "load"):
            if raw[side] not in rows:
                raise MatrixError(f"{where}.{side}: no row named {raw[side]!r}")
        pair = Pair(raw["save"], raw["load"], raw["why"], tuple(raw.get("families", ())))
        pairs[pair.name] = pair
    return Matrix(rows, pairs)


def _fields(raw: object, allowed: set[str], where: str, required: tuple[str, ...]) -> None:
    if not isinstance(raw, dict):
        raise MatrixError(f"{where}: expected a table")
    extra = sorted(set(raw) - allowed)
    if extra:
        raise MatrixError(f"{where}.{extra[0]}: unknown field; allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if not raw.get(key):
            raise MatrixError(f"{where}.{key}: required field is missing")
    for key, value in raw.items():
        if key == "cover":
            if not isinstance(value, int) or isinstance(value, bool):
                raise MatrixError(f"{where}.cover: expected a number (a strength), got {value!r}")
            continue
        lists = ("families", "workflows")
        names = key in lists and isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not names and (key in lists or not isinstance(value, str)):
            wanted = f"a list of {key}" if key in lists else "a string"
            raise MatrixError(f"{where}.{key}: expected {wanted}, got {value!r}")


def github_matrix(kind: str) -> str:
    """JSON for a GitHub Actions job matrix (`include`): each row with its runner label and torch build
    (a CUDA row takes the CUDA build uv detects on its runner), or each pair with the row it loads from."""
    import json

    found = load()
    if kind == "rows":
        return json.dumps(
            [
                {
                    "row": name,
                    "runner": row.runner or DEFAULT_RUNNER,
                    "torch-backend": "auto" if row.device == "cuda" else "cpu",
                }
                for name, row in found.rows.items()
            ]
        )
    return json.dumps([{"pair": name, "save": pair.save} for name, pair in found.pairs.items()])


# python -m conformance.reading.matrix rows|pairs (the nightly workflow's job matrix)
if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("rows", "pairs"):
        sys.exit("usage: python -m conformance.reading.matrix rows|pairs")
    print(github_matrix(sys.argv[1]))
