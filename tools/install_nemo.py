"""Install a NeMo Automodel release (or checkout) for the suite, with the transformers it pins.

    python tools/install_nemo.py [SPEC]        SPEC: "nemo-automodel==0.6.0", a path, or a git URL

NeMo Automodel's full dependency set (CUDA kernels, datasets, torchao...) does not install on a CPU
machine, and the model classes, checkpointer and LoRA code the suite drives need none of it; so the
package goes in with --no-deps, followed by the transformers version its metadata pins (each release
is tested on its pin) and torchao (the auto class's module imports it). TRANSFORMERS_SPEC overrides
that choice, e.g. to run a release on a newer one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata


def pip(*args: str) -> None:
    """pip where the environment has it; else uv (tox-uv and `uv venv` environments come without pip)."""
    if importlib.util.find_spec("pip") is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True)
        return
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        from uv import find_uv_bin  # the nemo environment lists `uv` among its deps

        uv = find_uv_bin()
    subprocess.run([uv, "pip", "install", "--quiet", "--python", sys.executable, *args], check=True)


def pinned_transformers() -> str | None:
    for requirement in metadata.requires("nemo-automodel") or []:
        if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
            continue
        match = re.match(r"transformers\s*([<>=!~][^;]*)", requirement)
        if match:
            return "transformers" + match.group(1).strip()
    return None


def _older(version: str, than: str) -> bool:
    """Release numbers only (this runs before the environment has `packaging` for sure)."""
    numbers = [int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3]]
    return numbers < [int(p) for p in than.split(".")]


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def main() -> int:
    spec = sys.argv[1] if len(sys.argv) > 1 else "nemo-automodel"
    pip("--no-deps", spec)
    wanted = os.environ.get("TRANSFORMERS_SPEC") or pinned_transformers()
    if wanted:
        pip(wanted)
    # NeMoAutoModelForCausalLM's module imports torchao (its QAT code); pure Python, no CUDA needed.
    pip("torchao")
    # Older transformers cannot import beside kernels >= 0.12 ("ValueError: Either a revision or a version
    # must be specified"): measured with 5.8.1 and 5.12.1 and kernels 0.19.1, which 5.25.0 imports fine
    # (5.13-5.24 not measured). Where something brought kernels in, take a release those work with.
    old_transformers = _older(metadata.version("transformers"), "5.13")
    if old_transformers and _installed("kernels") and not _older(metadata.version("kernels"), "0.12"):
        pip("kernels<0.12")
    source = "TRANSFORMERS_SPEC" if os.environ.get("TRANSFORMERS_SPEC") else "its pin"
    nemo, transformers = metadata.version("nemo-automodel"), metadata.version("transformers")
    print(f"install_nemo: nemo-automodel {nemo} with transformers {transformers} ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
