"""`python -m conformance`: see conformance.cli."""

import sys

# Guarded: a spawned worker (the CUDA leg) imports this module again, and must not start another run.
if __name__ == "__main__":
    try:
        from conformance.cli import entry
    except ModuleNotFoundError as exc:  # from a checkout, in an environment without the package installed
        sys.exit(
            f"conformance: {exc} — install the package first: pip install -e . (reading results: jinja2, "
            "pyyaml, packaging), or pip install -e '.[engine]' to run cases (torch, transformers, peft too)"
        )
    sys.exit(entry())
