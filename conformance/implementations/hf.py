"""transformers' own classes: the reference; its `native` run is the reference's self-check."""

from __future__ import annotations

from conformance.implementations import native_workflow as native
from conformance.implementations.base import Implementation

IMPLEMENTATION = Implementation(
    name="hf",
    package="transformers",
    about="transformers' own classes: tie rule, save/load and re-tie, checked against the rule table",
    runners={"native": native.runner(native.HFProvider())},
    order=0,
)
