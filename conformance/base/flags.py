"""Tie states: the top-level `tie_word_embeddings` and, for nested configs, the text config's; and the
storage of the weights, where it differs from what those flags rule.

A model whose config says tied may hold a head of its own (what training, untie-first or a trained
`lm_head` leaves behind: `apart`), and one whose config says untied may share one tensor (an accidental
alias: `alias`). Implementations must keep what the weights are through save and load, or refuse;
one that decides from the config alone fails on these states.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

NATURAL, APART, ALIAS = "", "apart", "alias"
STORAGE = (NATURAL, APART, ALIAS)
# A flag id: tT, tF (flat configs), tT-xF ... (nested: top-level, then text_config), and the storage where
# it is not what the flags rule: tT-apart, tF-xF-alias. Case ids embed it.
ID_PATTERN = r"t([TF])(?:-x([TF]))?(?:-(apart|alias))?"
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, order=True)
class TieFlags:
    """`top`: the flag on the model's own config; `text`: the one on `text_config` (None when flat);
    `storage`: APART or ALIAS where the weights' storage is not what the flags rule (NATURAL)."""

    top: bool
    text: bool | None = None
    storage: str = NATURAL

    @property
    def id(self) -> str:
        top = f"t{'T' if self.top else 'F'}"
        flags = top if self.text is None else f"{top}-x{'T' if self.text else 'F'}"
        return f"{flags}-{self.storage}" if self.storage else flags

    @property
    def built(self) -> TieFlags:
        """The flags alone: what a model built from the config has (the storage they rule)."""
        return TieFlags(self.top, self.text)

    @property
    def config_id(self) -> str:
        """The flags alone (what a config carries), without the storage."""
        return self.built.id

    def as_record(self) -> dict[str, bool | str | None]:
        found: dict[str, bool | str | None] = {"top": self.top, "text": self.text}
        if self.storage:
            found["storage"] = self.storage
        return found

    @classmethod
    def from_record(cls, flags: dict[str, bool | str | None]) -> TieFlags:
        """The inverse of `as_record`: the `flags` field of a results record."""
        return cls(bool(flags["top"]), flags.get("text"), str(flags.get("storage") or NATURAL))  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> TieFlags:
        match = _ID.fullmatch(text)
        if match is None:
            raise ValueError(f"not a flag id: {text!r} (expected tT, tF, tT-xF, tT-apart, tF-xF-alias, ...)")
        top, inner, storage = match.groups()
        return cls(top == "T", None if inner is None else inner == "T", storage or NATURAL)


def combinations(nested: bool) -> list[TieFlags]:
    """Every combination a family's config can express, in a fixed order (storage as the flags rule)."""
    if nested:
        return [TieFlags(top, text) for top in (True, False) for text in (True, False)]
    return [TieFlags(True), TieFlags(False)]


def states(nested: bool, tied: Callable[[TieFlags], bool]) -> list[TieFlags]:
    """Every combination, then each with the storage its flags do not rule: a tied one with a head of
    its own (apart), an untied one sharing one tensor (alias). `tied`: the HF rule on the flags."""
    found = combinations(nested)
    return found + [TieFlags(f.top, f.text, APART if tied(f) else ALIAS) for f in found]
