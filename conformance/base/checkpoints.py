"""Checkpoint folders written elsewhere (another machine, another version) are data, never code.

The cross-version `import` and a gate that reads another job's artifacts load folders nobody here
wrote. Before anything is loaded, a folder is vetted: only safetensors weights, JSON and README text may
be in it; a pickle-format weights file (torch.load runs code), Python source (remote code), a symlink,
or a manifest path that leads out of the folder is refused with one line naming it. Loads then ask
for safetensors only, so nothing falls back to pickle.
"""

from __future__ import annotations

from pathlib import Path

from conformance.base.errors import ConformanceError

ALLOWED_SUFFIXES = (".safetensors", ".json")
ALLOWED_NAMES = ("README.md",)  # PEFT writes a model card beside an adapter; it is never executed
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib")


class UnsafeCheckpoint(ConformanceError):
    """A checkpoint folder holds something that is not plain data."""


def vet(folder: Path) -> None:
    """Raise UnsafeCheckpoint (one line) unless every entry under `folder` is plain data."""
    if folder.is_symlink():
        raise UnsafeCheckpoint(f"{folder}: a symlink, not a checkpoint folder")
    if not folder.is_dir():
        raise UnsafeCheckpoint(f"{folder}: not a folder")
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise UnsafeCheckpoint(f"{path}: a symlink (to {path.readlink()}); only plain files are read")
        if path.is_dir():
            continue
        if not path.is_file():
            raise UnsafeCheckpoint(f"{path}: not a regular file")
        if path.suffix in PICKLE_SUFFIXES:
            raise UnsafeCheckpoint(f"{path}: pickle-format weights run code when loaded; only safetensors")
        if path.suffix not in ALLOWED_SUFFIXES and path.name not in ALLOWED_NAMES:
            raise UnsafeCheckpoint(f"{path}: unexpected file (only .safetensors, .json and README.md)")


def inside(folder: Path, relative: str, where: str) -> Path:
    """A path a manifest names, which must stay inside `folder` (no `..`, no absolute path, no symlink)."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        raise UnsafeCheckpoint(f"{where}: {relative!r} is not a path relative to {folder}")
    root = folder.resolve()
    target = (folder / relative).resolve()
    if not target.is_relative_to(root):
        raise UnsafeCheckpoint(f"{where}: {relative!r} leads out of {folder}")
    if (folder / relative).is_symlink():
        raise UnsafeCheckpoint(f"{where}: {relative!r} is a symlink")
    return target
