"""Feature probes decide what runs; dev builds are matched against expectations by the release rule.

The probe tests drive the installed PEFT: the newest release has every feature, a PEFT that ignores
ensure_weight_tying for target_modules (as 0.18 does; patched in at import, as the detection tests do)
lacks one, and the recipes needing it are skipped with that reason. The source tree whose version
string lags its features is in tests/gate/.
"""

import logging
import textwrap
import warnings

import peft
import pytest
import torch

from conformance.base import versions
from conformance.base.errors import ConformanceError
from conformance.engine.core import vocabulary
from conformance.model import features
from conformance.model import recipes as recipe_book
from conformance.reading import expectations

PEFT_FEATURES = [f.name for f in features.declared().values() if f.package == "peft"]


@pytest.fixture
def fresh_probes():
    features.missing.cache_clear()
    yield
    features.missing.cache_clear()


def test_the_installed_release_has_every_peft_feature(fresh_probes):
    assert {name: features.missing(name) for name in PEFT_FEATURES} == dict.fromkeys(PEFT_FEATURES)
    assert set(features.found()["peft"]) == set(PEFT_FEATURES)


def test_probes_leave_no_trace(fresh_probes, capsys):
    torch.manual_seed(123)
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    filters, disabled = list(warnings.filters), logging.root.manager.disable
    features.found()
    assert torch.equal(rng, torch.random.get_rng_state()), "a probe moved the global RNG"
    assert torch.get_num_threads() == threads
    assert warnings.filters == filters and logging.root.manager.disable == disabled
    assert capsys.readouterr() == ("", "")


def test_a_peft_that_ignores_ensure_weight_tying_for_target_modules_lacks_the_feature(
    fresh_probes, monkeypatch
):
    # PEFT 0.18 accepted the flag and warned, but wrapped only the layer named in target_modules.
    original = peft.get_peft_model

    def ignoring(model, config, *args, **kwargs):
        if config.target_modules and "embed_tokens" in config.target_modules:
            config.ensure_weight_tying = False
        return original(model, config, *args, **kwargs)

    monkeypatch.setattr(peft, "get_peft_model", ignoring)
    reason = features.missing("ewt-target-modules")
    assert reason and "leaves the tied lm_head without an adapter" in reason and "(peft " in reason
    assert features.missing("ewt-modules-to-save") is None, "one missing feature does not hide the others"
    book = recipe_book.load()
    skip = book.skip_reason(book.get("lora_embed_ewt"))
    assert skip and skip.startswith("recipe lora_embed_ewt needs ensure_weight_tying for target_modules")
    assert book.skip_reason(book.get("mts_embed_ewt")) is None


def test_an_unknown_feature_in_the_recipes_is_one_line(tmp_path):
    path = tmp_path / "recipes.yaml"
    path.write_text(
        textwrap.dedent(
            """
            recipes:
              - name: lora_attn
                lora: {target_modules: [q_proj]}
                on_tied_model: separate
                requires: [ewt-everything]
            """
        )
    )
    with pytest.raises(ConformanceError) as caught:
        recipe_book.load(path)
    message = str(caught.value)
    assert "\n" not in message and "requires" in message and "unknown feature 'ewt-everything'" in message


@pytest.mark.parametrize(
    ("version", "spec", "matches"),
    [
        ("0.18.1", "<0.19", True),  # a release: its own range
        ("0.18.2.dev0", "<0.19", False),  # a dev build after 0.18: may already hold 0.19's fixes
        ("0.18.2.dev0", ">=0.18,<0.19", False),
        ("0.18.2.dev0", ">=0.18", True),  # open-ended: still the code that follows 0.18
        ("0.22.0.dev0", ">=0.19", True),
        ("0.22.0.dev0", "==0.22.0", False),
        ("0.21.2", ">=0.19,<0.30", True),
    ],
)
def test_dev_builds_match_only_open_ended_expectation_ranges(version, spec, matches):
    found = versions.satisfies(
        "peft", versions.parse_spec(spec, "test"), {"peft": version}, releases_only=True
    )
    assert found is matches


def test_other_version_ranges_read_a_dev_build_as_its_version():
    # A family's tie rule by transformers version: a 5.x dev build ties as 5.x does.
    assert versions.satisfies(
        "transformers", versions.parse_spec(">=5.0", "t"), {"transformers": "5.26.0.dev0"}
    )
    assert versions.satisfies("peft", versions.parse_spec("<0.19", "t"), {"peft": "0.18.2.dev0"})


def test_a_release_expectation_does_not_excuse_a_dev_build(tmp_path):
    path = tmp_path / "peft.yaml"
    path.write_text(
        textwrap.dedent(
            """
            expectations:
              - id: mts-merge-keeps-tied-config-warned
                when: {recipe: mts_embed, versions: {peft: ">=0.18,<0.19"}}
                outcome: diverged-warned
                class: bug
                link: https://github.com/huggingface/peft/issues/2777
                reason: one line
            """
        )
    )
    (entry,) = expectations.load_file(path, "peft", vocabulary())
    subject = dict(
        implementation="peft",
        family="llama",
        flags="tT",
        recipe="mts_embed",
        workflow="merge",
        check="x",
        tied=True,
    )
    assert entry.matches(expectations.Subject(**subject, versions={"peft": "0.18.1"}))
    assert not entry.matches(expectations.Subject(**subject, versions={"peft": "0.18.2.dev0"}))
