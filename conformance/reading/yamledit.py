"""Edits to an expectation file that leave what they do not change byte for byte as it was written.

ruamel.yaml's round trip keeps comments, order and quoting, but joins a flow list written over several
lines into one. So the edits are made on its model and only their lines are spliced into the text as
written (`splice`): an entry no edit touches keeps its layout exactly, and a no-op is the same file.
"""

from __future__ import annotations

import difflib
import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance.base.errors import CaseFileError, ConformanceError

# Written as the files write them: lists and version tables inline, ranges quoted, long lines folded.
_FOLDED, _WIDTH = ("repro", "reason"), 100


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the files' layout: "  - id:" under "expectations:"
    yaml.width = 4096  # re-wrap nothing: a long line stays one line
    return yaml


def _load(yaml: Any, text: str, path: Path) -> Any:
    from ruamel.yaml import YAMLError

    try:
        return yaml.load(text)
    except YAMLError as exc:
        raise CaseFileError(str(path), f"cannot edit it ({str(exc).splitlines()[0]})") from None


def _dump(yaml: Any, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def splice(original: str, before: str, after: str) -> str:
    """The changes from `before` to `after` (ruamel's dumps of the file before and after the edits) made to
    `original`, the text as written. A change whose edge falls inside lines ruamel laid out otherwise is
    widened to the nearest line both texts share, so only the lines an edit touches take ruamel's layout."""
    text, old, new = (t.splitlines(keepends=True) for t in (original, before, after))
    written: dict[int, int] = {}  # a line boundary of `before` -> the same boundary in `original`
    ambiguous = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, text, autojunk=False).get_opcodes():
        if tag == "equal":
            written.update((i1 + k, j1 + k) for k in range(i2 - i1 + 1))
        elif tag == "insert":
            ambiguous.add(i1)
        else:
            written[i1], written[i2] = j1, j2
    for i in ambiguous:
        written.pop(i, None)
    starts: dict[int, int] = {}  # a boundary of `before` -> of `after`, seen as a change's start / end
    ends: dict[int, int] = {}
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            starts.update((i1 + k, j1 + k) for k in range(i2 - i1))
            ends.update((i1 + k, j1 + k) for k in range(1, i2 - i1 + 1))
        else:
            changes.append((i1, i2, j1, j2))
    for i1, i2, j1, j2 in changes:  # after the equal runs: an insertion's edges are those of a run too
        starts[i1], ends[i2] = j1, j2
    spans: list[list[int]] = []
    for i1, i2, _, _ in changes:
        while i1 > 0 and not (i1 in written and i1 in starts):
            i1 -= 1
        while i2 < len(old) and not (i2 in written and i2 in ends):
            i2 += 1
        if spans and i1 < spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], i2)
        else:
            spans.append([i1, i2])
    if any(edge not in written for edge in (0, len(old), *(e for span in spans for e in span))):
        return after  # nothing to anchor the edits to: ruamel's layout for the whole file
    out, at = [], 0
    for i1, i2 in spans:
        out += text[written[at] : written[i1]] + new[starts[i1] : ends[i2]]
        at = i2
    return "".join(out + text[written[at] :])


def _cut(text: str, items: Any, gone: set[str]) -> str:
    """The text without the entries named. The comments and blank lines between entries stay: a heading
    above the next entry is not the pruned one's."""
    lines = text.splitlines(keepends=True)
    starts = [items.lc.item(i)[0] for i in range(len(items))] + [len(lines)]
    for i in reversed(range(len(items))):
        if items[i].get("id") not in gone:
            continue
        end, column = starts[i + 1], items.lc.item(i)[1]

        def between(line: str, column: int = column) -> bool:
            return not line.strip() or (
                line.lstrip().startswith("#") and len(line) - len(line.lstrip()) < column
            )

        while end > starts[i] and between(lines[end - 1]):
            end -= 1
        while end < len(lines) and not lines[end].strip():
            end += 1
        del lines[starts[i] : end]
    return "".join(lines).rstrip("\n") + "\n"


def _styled(value: Any, key: str = "") -> Any:
    """Plain data as the files write it."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, FoldedScalarString

    if isinstance(value, dict):
        table = CommentedMap((k, _styled(v, k)) for k, v in value.items())
        if key == "versions":
            table = CommentedMap((k, DoubleQuotedScalarString(v)) for k, v in value.items())
            table.fa.set_flow_style()
        return table
    if isinstance(value, list) and key == "when":
        return CommentedSeq(_styled(v) for v in value)
    if isinstance(value, list):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        return seq
    if key not in _FOLDED:
        return value
    folded, start = FoldedScalarString(value), 0
    folded.fold_pos = []  # a reason wraps at ~100 characters as the files' do; a repro stays one line
    while (
        key == "reason"
        and len(value) - start > _WIDTH
        and (space := value.rfind(" ", start, start + _WIDTH)) > start
    ):
        folded.fold_pos.append(space)
        start = space + 1
    return folded


def edit(
    text: str,
    path: Path,
    narrowed: list[tuple[str, int, dict[str, str]]],
    gone: set[str],
    drafts: list[dict[str, Any]],
) -> str:
    """`text` (the file at `path`) without the entries `gone`, with new ranges for clauses (entry id, the
    clause's index in a `when` list, the ranges by package) and the drafts at the end (their ids made
    unique). Unchanged, it is `text` itself."""
    yaml = _yaml()
    doc = _load(yaml, text, path)
    if gone:
        text = _cut(text, doc["expectations"], gone)
        doc = _load(yaml, text, path)
    items = (doc or {}).get("expectations") or []
    before = _dump(yaml, doc)
    for ident, number, specs in narrowed:
        entry = next(e for e in items if e.get("id") == ident)
        clause = entry["when"] if isinstance(entry["when"], dict) else entry["when"][number]
        if clause.get("versions") is None:
            clause["versions"] = _styled({}, "versions")
        for package, spec in specs.items():
            if clause["versions"].get(package) != spec:
                clause["versions"][package] = _styled({package: spec}, "versions")[package]
    # ruamel leaves one space before a comment that a longer value pushed right; the files keep two.
    after = re.sub(r"^(\s+versions: \{[^{}#\n]*\}) #", r"\1  #", _dump(yaml, doc), flags=re.MULTILINE)
    if after != before:
        text = splice(text, before, after)
    if not drafts:
        return text
    taken = {e.get("id") for e in items}
    for draft in drafts:
        ident, n = draft["id"], 1
        while draft["id"] in taken:
            n += 1
            draft["id"] = f"{ident}-{n}"
        taken.add(draft["id"])
    # One at a time: ruamel writes a list's items without the blank line the files keep between entries.
    blocks = [_dump(yaml, {"expectations": [_styled(d)]}).split("\n", 1)[1] for d in drafts]
    return text.rstrip("\n") + ("\n\n" if items else "\n" if doc else "\nexpectations:\n") + "\n".join(blocks)


def check(text: str, path: Path, load: Callable[[Path], Any]) -> None:
    """What would be written loads (with `load`, the loader a run uses) before anything is written."""
    with tempfile.TemporaryDirectory() as folder:
        trial = Path(folder) / path.name
        trial.write_text(text)
        try:
            load(trial)
        except CaseFileError as exc:
            raise ConformanceError(
                f"{path}: the update would not load ({exc.problem}); nothing written"
            ) from None
