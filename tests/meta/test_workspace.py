"""The per-run workspace: what it shares between cases must never leak from one case into another."""

import torch

from conformance.base.flags import TieFlags
from conformance.model import families
from conformance.model.pipeline import Workspace, logits


def test_cached_base_logits_follow_the_inputs(tmp_path):
    family = families.get("llama")
    model = family.build(family.canonical, TieFlags(True), 0, torch.float32)
    workspace = Workspace(tmp_path)
    key = ("llama", "base")
    first, second = torch.tensor([[3, 4, 5]]), torch.tensor([[6, 7, 8]])
    assert torch.equal(workspace.logits(key, model, first), logits(model, first))
    assert torch.equal(workspace.logits(key, model, second), logits(model, second))


def test_each_case_gets_its_own_copy_of_a_shared_base(tmp_path):
    family = families.get("llama")
    workspace = Workspace(tmp_path)
    build = lambda: family.build(family.canonical, TieFlags(True), 0, torch.float32)  # noqa: E731
    one, two = workspace.model("k", build), workspace.model("k", build)
    with torch.no_grad():
        one.get_input_embeddings().weight.add_(1.0)
    assert one.get_output_embeddings().weight is one.get_input_embeddings().weight, "the copy stays tied"
    assert not torch.equal(one.get_input_embeddings().weight, two.get_input_embeddings().weight)
