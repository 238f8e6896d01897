"""Checkpoint folders from elsewhere: only safetensors and JSON are read; anything else is refused.

Each hostile folder starts as a real checkpoint of a tiny model (saved by transformers) and gets one
hostile entry: a real pickle (torch.save), Python source, a symlink, a manifest path that leaves it.
"""

import os

import pytest
import torch

from conformance.base import checkpoints
from conformance.base.checkpoints import UnsafeCheckpoint
from conformance.base.flags import TieFlags
from conformance.model import families, pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    family = families.get("llama")
    model = family.build(family.canonical, TieFlags(False), 0, torch.float32)
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(folder)
    return folder


def _copy(saved, tmp_path):
    import shutil

    target = tmp_path / "model"
    shutil.copytree(saved, target)
    return target


def test_a_plain_checkpoint_passes_and_loads_from_safetensors_only(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "README.md").write_text("model card")
    checkpoints.vet(folder)
    model = pipeline.load_hf(folder, families.get("llama"), torch.float32)
    assert model.get_output_embeddings().weight.shape[0] == 128


def test_a_pickle_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpoint, match=r"pytorch_model\.bin: pickle-format weights"):
        checkpoints.vet(folder)


def test_the_loader_never_falls_back_to_a_pickle(saved, tmp_path):
    # Even past the vetting, a folder holding only a pickle does not load: safetensors are asked for.
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((saved / "config.json").read_text())
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(OSError):
        pipeline.load_hf(folder, families.get("llama"), torch.float32)


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("modeling_evil.py", lambda p: p.write_text("import os"), "unexpected file"),
        ("link.json", lambda p: os.symlink("/etc/passwd", p), "a symlink"),
        ("sub", lambda p: os.symlink("/etc", p), "a symlink"),
        ("fifo.json", lambda p: os.mkfifo(p), "not a regular file"),
    ],
)
def test_other_hostile_entries_are_refused(saved, tmp_path, name, make, words):
    folder = _copy(saved, tmp_path)
    make(folder / name)
    with pytest.raises(UnsafeCheckpoint) as caught:
        checkpoints.vet(folder)
    assert words in str(caught.value) and name in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("relative", ["../outside.json", "/etc/passwd", "a/../../x", "", "link"])
def test_manifest_paths_stay_inside_the_folder(saved, tmp_path, relative):
    folder = _copy(saved, tmp_path)
    os.symlink(folder / "config.json", folder / "link")
    with pytest.raises(UnsafeCheckpoint) as caught:
        checkpoints.inside(folder, relative, "manifest.json:cases[0].merged")
    assert str(caught.value).startswith("manifest.json:cases[0].merged: ")
    assert checkpoints.inside(folder, "config.json", "m") == (folder / "config.json").resolve()
