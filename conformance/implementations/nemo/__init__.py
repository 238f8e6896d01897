"""NVIDIA NeMo Automodel, the one place the suite names it: its own model classes (`classes`, implementation
`nemo-automodel`), its production auto class (`auto`, `nemo-auto`), its checkpointer's resume (`resume`),
the standalone script pieces of its classes (repro.py.j2) and the features a source build is probed for.

Imported lazily: `nemo_automodel` is optional and slow to import; without it every case says why it skips.
"""

from __future__ import annotations

from conformance.implementations.nemo import auto, classes
from conformance.model import features

features.register(
    features.Feature(
        "nemo-lora",
        classes.PACKAGE,
        "NeMo LoRA on linear layers and its PEFT-format export",
        features.imports("nemo_automodel.components._peft.lora:apply_lora_to_linear_modules"),
    )
)
features.register(
    features.Feature(
        "nemo-tie-support",
        classes.PACKAGE,
        "model classes declare the tie_word_embeddings they build (TieSupport)",
        features.imports("nemo_automodel.components.models.common.tie_word_embeddings:TieSupport"),
    )
)

IMPLEMENTATIONS = (classes.IMPLEMENTATION, auto.IMPLEMENTATION)
