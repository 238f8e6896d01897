"""No module of conformance/ imports from a layer above its own (module-level imports; an import inside a
function is a deliberate late binding, e.g. the CLI loading the engine only for the verbs that run)."""

from __future__ import annotations

import ast
from pathlib import Path

from conformance import contract

# Through a module, not the package: under an editable install `conformance` may resolve to a namespace.
ROOT = Path(contract.__file__).parent
# Lowest first. Readers of results sit below the model layer: they must work without torch.
LAYERS = (
    (
        "base",
        (
            "errors",
            "contract",
            "versions",
            "flags",
            "precision",
            "device",
            "casesdir",
            "casefiles",
            "outcomes",
            "checkpoints",
        ),
    ),
    ("reading", ("expectations", "results", "report", "gate", "timeline", "matrix")),
    (
        "model",
        (
            "families",
            "features",
            "recipes",
            "cases",
            "effective",
            "generators",
            "oracles",
            "pipeline",
            "layouts",
        ),
    ),
    ("implementations", ("implementations",)),
    ("engine", ("engine", "cover", "execution", "crossver", "session", "standalone", "testing")),
    ("entry", ("cli", "__main__", "__init__")),
)


def _layer(module: str) -> int:
    top = module.removeprefix("conformance.").split(".")[0] if module != "conformance" else "__init__"
    for rank, (_, names) in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"conformance.{top} is in no layer of tests/meta/test_layers.py: add it")


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conformance"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("conformance"))
    return found


def test_no_module_imports_from_a_layer_above():
    modules = _modules()
    wrong = []
    for name, path in sorted(modules.items()):
        # `from conformance import x` names the package too: only x counts.
        for target in sorted(_imports(path) & set(modules) - {"conformance"}):
            if target != name and _layer(target) > _layer(name):
                wrong.append(
                    f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
                )
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_layer():
    for name in _modules():
        _layer(name)
