"""`python -m conformance`: see conformance.cli."""

import sys

from conformance.cli import main

# Guarded: a spawned worker (the CUDA leg) imports this module again, and must not start another run.
if __name__ == "__main__":
    sys.exit(main())
