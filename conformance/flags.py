"""Tie flag combinations: the top-level `tie_word_embeddings` and, for nested configs, the text config's."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A flag id: tT, tF (flat configs), tT-xF ... (nested: top-level, then text_config). Case ids embed it.
ID_PATTERN = r"t([TF])(?:-x([TF]))?"
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, order=True)
class TieFlags:
    """`top`: the flag on the model's own config; `text`: the one on `text_config` (None when flat)."""

    top: bool
    text: bool | None = None

    @property
    def id(self) -> str:
        top = f"t{'T' if self.top else 'F'}"
        return top if self.text is None else f"{top}-x{'T' if self.text else 'F'}"

    def as_record(self) -> dict[str, bool | None]:
        return {"top": self.top, "text": self.text}

    @classmethod
    def from_record(cls, flags: dict[str, bool | None]) -> TieFlags:
        """The inverse of `as_record`: the `flags` field of a results record."""
        return cls(flags["top"], flags.get("text"))

    @classmethod
    def parse(cls, text: str) -> TieFlags:
        match = _ID.fullmatch(text)
        if match is None:
            raise ValueError(f"not a flag id: {text!r} (expected tT, tF, tT-xF, ...)")
        top, inner = match.groups()
        return cls(top == "T", None if inner is None else inner == "T")


def combinations(nested: bool) -> list[TieFlags]:
    """Every combination a family's config can express, in a fixed order."""
    if nested:
        return [TieFlags(top, text) for top in (True, False) for text in (True, False)]
    return [TieFlags(True), TieFlags(False)]
