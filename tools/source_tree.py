"""Build a source tree of PEFT or NeMo Automodel the way a pull request's build looks, to gate it.

    python tools/source_tree.py peft OUT                            # the newest release, as a checkout
    python tools/source_tree.py peft OUT --revert peft-3126         # ...with PR #3126 taken back out
    python tools/source_tree.py peft OUT --version 0.18.2.dev0      # ...whose version lags its features
    python tools/source_tree.py nemo OUT --revert nemo-2601 --spec nemo-automodel==0.7.0
    python tools/source_tree.py nemo OUT --git MIRROR.git --commit 1197b6281   # an upstream commit

The package's files come from its released wheel (installed with uv into a scratch folder, no
dependencies), go into OUT with a pyproject.toml that declares the same name, version (or --version)
and dependencies, and become a git repository: one commit for the release, one more for each revert,
as a pull request branch would look. `pip install OUT` or PEFT_SPEC=OUT then installs it from the path.
Each revert is a real edit of the library's source; it fails with one line if the code it takes out
is not there (another release may have moved it). With --git and --commit the tree is that commit of
an upstream clone (`git archive`, the project's own pyproject.toml): a fix and its parent exactly as
their pull request left them, where a clone is at hand (the `fetch` tool's mirrors; CI has none, and
the gate tests fall back to the release with the fix reverted).
"""

from __future__ import annotations

import argparse
import email.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gate import GateError, uv_bin  # tools/ is on the path of a script run from it

PACKAGES = {"peft": ("peft", "peft"), "nemo": ("nemo-automodel", "nemo_automodel")}


class TreeError(Exception):
    pass


@dataclass(frozen=True)
class Revert:
    package: str
    file: str  # inside the import package
    about: str
    # (start marker, end marker[, the parent's text]): the text from start up to and including end is
    # cut, and the parent's text put in its place; end=None cuts up to the next line at the start
    # marker's indentation that begins a new `def`.
    cuts: tuple[tuple[str, str | None] | tuple[str, str | None, str], ...]
    gone: str  # a line that must no longer appear afterwards


REVERTS = {
    "peft-3126": Revert(
        "peft",
        "tuners/tuners_utils.py",
        "PEFT PR #3126: merge_and_unload sets tie_word_embeddings=False once the merged layers no "
        "longer share storage",
        (
            (
                "        # If embeddings have diverged",
                "                except (NotImplementedError, AttributeError):\n                    pass\n",
            ),
        ),
        "self.model.config.tie_word_embeddings = False",
    ),
    "peft-3455": Revert(
        "peft",
        "utils/other.py",
        "PEFT PR #3455: unloading a modules_to_save wrapper none of whose adapters is active returns the "
        "original module",
        (
            (
                "        if not self.active_adapters:\n            # none of the modules_to_save adapters",
                "            return self.original_module\n\n",
            ),
        ),
        "none of the modules_to_save adapters of this module are active",
    ),
    "peft-3514": Revert(
        "peft",
        "tuners/trainable_tokens/layer.py",
        "PEFT PR #3514: merging a trainable-tokens adapter checks its rows against adapters merged before",
        (
            (
                "        adapters_to_check = list(dict.fromkeys(self.merged_adapters + adapter_names))\n",
                "            return\n",
                # The parent checked the names of one call only: one merge_adapter call each never met.
                "        if len(adapter_names) <= 1:\n            return\n",
            ),
            (
                "        for adapter_name in adapters_to_check:\n",
                "        for adapter_name in adapters_to_check:\n",
                "        for adapter_name in set(adapter_names + self.merged_adapters):\n",
            ),
        ),
        "self.merged_adapters + adapter_names",
    ),
    "nemo-2601": Revert(
        "nemo",
        "components/models/gemma4_moe/model.py",
        "NeMo Automodel PR #2601: Gemma4 MoE re-ties lm_head to the embedding its MoE backend swapped in",
        (
            ("        # HF's super().__init__() tied lm_head.weight", "        self.tie_weights()\n"),
            ("    def tie_weights(self, *_args", None),
        ),
        "self.lm_head.weight = self.model.language_model.embed_tokens.weight",
    ),
    "nemo-2998": Revert(
        "nemo",
        "components/models/qwen3_5/model.py",
        "NeMo Automodel PR #2998: Qwen3.5's VL class re-ties lm_head after swapping in its text backbone",
        (("        # HF post_init tied lm_head to the pre-swap embedding", "        self.tie_weights()\n"),),
        "swap above orphaned that alias",
    ),
    "nemo-2942": Revert(
        "nemo",
        "_transformers/model_init.py",
        "NeMo Automodel PR #2942: model init re-ties _nemo_tied_weights_keys only where the config says tied",
        (("    # Only re-tie when the controlling config flag", "        return\n"),),
        "Only re-tie when the controlling config flag",
    ),
    "nemo-2732": Revert(
        "nemo",
        "shared/tied_weights.py",
        "NeMo Automodel PR #2732: the checkpointer resolves tie_word_embeddings by the top-level flag first, "
        "as HF ties",
        (
            (
                '    if hasattr(config, "tie_word_embeddings"):\n',
                '    return bool(getattr(text_config, "tie_word_embeddings", False))\n',
                # The parent read text_config's flag first (a plain config is its own text config).
                '    text_config = getattr(config, "get_text_config", lambda: None)()\n'
                '    top = getattr(config, "tie_word_embeddings", False)\n'
                '    return bool(getattr(text_config, "tie_word_embeddings", top))\n',
            ),
        ),
        "return bool(config.tie_word_embeddings)",
    ),
}


def fetch(spec: str, scratch: Path) -> tuple[Path, list[str], str]:
    """The release's files: (its dist-info folder, its Requires-Dist lines, its version)."""
    subprocess.run(
        [uv_bin(), "pip", "install", "--quiet", "--no-deps", "--target", str(scratch), spec],
        check=True,
        capture_output=True,
        text=True,
    )
    infos = list(scratch.glob("*.dist-info"))
    if len(infos) != 1:
        raise TreeError(f"{spec}: expected one distribution, found {[p.name for p in infos]}")
    meta = email.parser.Parser().parsestr((infos[0] / "METADATA").read_text())
    return infos[0], meta.get_all("Requires-Dist") or [], meta["Version"]


def cut(text: str, start: str, end: str | None, where: str, parent: str = "") -> str:
    begin = text.find(start)
    if begin < 0:
        raise TreeError(f"{where}: cannot find {start.strip()!r}: this release does not hold that change")
    if end is None:
        indent = len(start) - len(start.lstrip())
        following = re.compile(rf"^ {{{indent}}}(def |@|class )", re.MULTILINE)
        match = following.search(text, begin + len(start))
        stop = match.start() if match else len(text)
    else:
        stop = text.find(end, begin)
        if stop < 0:
            raise TreeError(f"{where}: cannot find the end of the block {start.strip()!r}")
        stop += len(end)
    return text[:begin] + parent + text[stop:]


def apply(revert: Revert, tree: Path) -> None:
    module = PACKAGES[revert.package][1]
    path = tree / module / revert.file
    text = path.read_text()
    for start, end, *parent in revert.cuts:
        text = cut(text, start, end, str(path), *parent)
    if revert.gone in text:
        raise TreeError(f"{path}: {revert.gone!r} is still there after the revert")
    path.write_text(text)


def git(tree: Path, *args: str) -> None:
    identity = ["-c", "user.name=conformance", "-c", "user.email=conformance@localhost"]
    subprocess.run(["git", "-C", str(tree), *identity, *args], check=True, capture_output=True)


def build(package: str, out: Path, spec: str | None = None, version: str | None = None,
          reverts: list[str] = ()) -> Path:  # fmt: skip
    """OUT as a git checkout of `package` (released files, optional version string and reverts)."""
    distribution, module = PACKAGES[package]
    for name in reverts:
        if REVERTS[name].package != package:
            raise TreeError(f"--revert {name} is a change of {REVERTS[name].package}, not {package}")
    if out.exists() and any(out.iterdir()):
        raise TreeError(f"{out} exists and is not empty")
    with tempfile.TemporaryDirectory(prefix="source-tree-") as scratch:
        _, requires, released = fetch(spec or distribution, Path(scratch))
        shutil.copytree(
            Path(scratch) / module, out / module, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    # Extras' requirements are left out: the tree is installed for its core, as a gate installs it.
    deps = ",\n".join(f"    {json.dumps(dep)}" for dep in requires if "extra ==" not in dep)
    (out / "pyproject.toml").write_text(
        f'''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "{version or released}"
description = "{distribution} {released} rebuilt from its files as a source tree (tools/source_tree.py)"
requires-python = ">=3.10"
dependencies = [
{deps}
]

[tool.setuptools.packages.find]
include = ["{module}", "{module}.*"]

[tool.setuptools.package-data]
"*" = ["*", "**/*"]
'''
    )
    git(out, "init", "--quiet")
    git(out, "add", "-A")
    git(out, "commit", "--quiet", "-m", f"{distribution} {released} as released")
    for name in reverts:
        apply(REVERTS[name], out)
        git(out, "commit", "--quiet", "-am", f"Revert {REVERTS[name].about}")
    return out


def from_git(gitdir: Path, commit: str, out: Path) -> Path:
    """OUT as a checkout of one commit of an upstream clone, as its pull request's build sees it."""
    if out.exists() and any(out.iterdir()):
        raise TreeError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", f"--git-dir={gitdir}", "archive", "--format=tar", commit], capture_output=True
    )
    if archive.returncode != 0:
        raise TreeError(f"{gitdir}: cannot archive {commit}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    git(out, "init", "--quiet")
    git(out, "add", "-A")
    git(out, "commit", "--quiet", "-m", f"upstream {commit}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", choices=sorted(PACKAGES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--spec", help="release to start from (default: the newest)")
    parser.add_argument("--version", help="version string the tree declares (default: the release's)")
    parser.add_argument("--revert", action="append", default=[], choices=sorted(REVERTS))
    parser.add_argument("--git", type=Path, help="an upstream clone's git directory (with --commit)")
    parser.add_argument("--commit", help="the commit of --git to check out instead of a release")
    args = parser.parse_args(argv)
    if bool(args.git) != bool(args.commit):
        parser.error("--git and --commit go together")
    try:
        if args.git:
            tree = from_git(args.git, args.commit, args.out)
        else:
            tree = build(args.package, args.out, args.spec, args.version, args.revert)
    except (TreeError, GateError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        print(f"error: {str(detail).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    print(tree)
    return 0


if __name__ == "__main__":
    sys.exit(main())
