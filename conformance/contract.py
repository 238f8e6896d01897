"""The pipeline's names, declared once and importable without torch: workflows and hypothesis profiles.

The engine, the report, the gate and the tests all read these; the verbs that only read results
(report, diff, gate) must not pull in torch or transformers to learn them.
"""

from __future__ import annotations

# Every workflow any implementation runs (each implementation declares its own subset).
WORKFLOWS = ("merge", "adapter", "untie-first", "native", "lora-merge")

# Hypothesis settings profiles (registered in conformance.generators).
PROFILES = ("dev", "ci", "nightly")

# Workflows a standalone repro script can replay with the libraries alone (the others need the suite's
# own steps: NeMo's LoRA export).
STANDALONE_WORKFLOWS = ("merge", "adapter", "untie-first", "native")
