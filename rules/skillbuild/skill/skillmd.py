"""Frontmatter: a SKILL.md's (split, parse, render, provenance, carry-over) and a loose reader of any Markdown file's.

SKILL.md frontmatter is parsed with strictyaml, as the Agent Skills validator does; commands and agents
are read loosely (`read_frontmatter_fields`), since those files are messy.

Rendering always double-quotes strings (JSON escapes are valid YAML), so values with `: `, `#` or
quotes stay safe under strictyaml, and never emits flow lists, which strictyaml rejects. Keys carried
over from a hand-written original are copied as its raw lines, never re-rendered: `user-invocable: false`
must stay a boolean, and `hooks` a map.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any


ALLOWED_KEYS = ("name", "description", "license", "allowed-tools", "metadata", "compatibility")
PROVENANCE_PREFIX = "skillbuild"
WRITTEN_KEYS = ("name", "description", "metadata")  # what skillbuild writes itself; the rest is carried over
CONTENT_HASH = "content-hash"  # provenance field: the file as written, so a later hand edit shows


class FrontmatterError(ValueError):
    pass


def split(text: str) -> tuple[str, str]:
    """Return (frontmatter block, body); the block is the lines between `---` at byte 0 and the next `---` line."""
    if not text.startswith("---\n") and not text.startswith("---\r\n"):
        raise FrontmatterError("frontmatter must start with a '---' line at byte 0")
    lines = text.splitlines(keepends=True)
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n") == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1:])
    raise FrontmatterError("frontmatter is not closed by a '---' line")


def parse(text: str) -> tuple[dict[str, Any], str]:
    """Parse frontmatter the way the reference validator does; raise FrontmatterError with the reason."""
    block, body = split(text)
    if "---" in block:
        # The reference validator splits naively on '---': a value holding it would be cut short.
        raise FrontmatterError("a frontmatter value contains '---', which truncates the frontmatter")
    from skills_ref.errors import ParseError  # deferred: strictyaml is slow to import
    from skills_ref.parser import parse_frontmatter

    try:
        meta, _ = parse_frontmatter(text)
    except ParseError as exc:
        raise FrontmatterError(str(exc)) from None
    return meta, body


def _scalar(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def render(meta: dict[str, Any], body: str) -> str:
    """Frontmatter in a fixed key order, then the body."""
    lines = ["---"]
    for key in ALLOWED_KEYS:
        if key not in meta or meta[key] in (None, "", {}):
            continue
        value = meta[key]
        if key == "metadata":
            lines.append("metadata:")
            lines.extend(f"  {_scalar(k)[1:-1]}: {_scalar(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {_scalar(value)}")
    extra = sorted(set(meta) - set(ALLOWED_KEYS))
    lines.extend(f"{key}: {_scalar(meta[key])}" for key in extra)  # kept so the gates can reject them
    return "\n".join(lines) + "\n---\n\n" + body.lstrip("\n")


def provenance(text: str) -> dict[str, str] | None:
    """Our metadata map if skillbuild wrote this file, else None (hand-written or unreadable).

    A line scan, not a YAML parse: it runs for every plugin on every load, and our own renderer wrote
    the lines it looks for (`metadata:` then indented `key: "value"`).
    """
    try:
        block, _ = split(text)
    except FrontmatterError:
        return None
    fields: dict[str, str] = {}
    inside = False
    for line in block.splitlines():
        if not line.startswith((" ", "\t")):
            inside = line.rstrip() == "metadata:"
            continue
        match = re.match(r'^\s+"?([\w.-]+)"?:\s*(.*)$', line) if inside else None
        if match:
            fields[match.group(1)] = _unquote(match.group(2).strip())
    return fields if fields.get("generator", "").startswith(PROVENANCE_PREFIX) else None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
    return value.strip("'")


def with_provenance(text: str, fields: dict[str, str], carried: dict[str, str] | None = None) -> str:
    """Re-render a candidate with our provenance merged into `metadata` (ours win on clashes), the raw
    `carried` entries put back verbatim, and the hash of the result's content recorded."""
    meta, body = parse(text)
    metadata = dict(meta.get("metadata") or {})
    metadata.update(fields)
    metadata.pop(CONTENT_HASH, None)
    meta["metadata"] = metadata
    written = carry_over(render(meta, body), carried or {})
    metadata[CONTENT_HASH] = content_hash(written)
    return carry_over(render(meta, body), carried or {})


def entries(block: str) -> list[tuple[str | None, str]]:
    """The frontmatter block as (top-level key, its raw lines); continuation lines (indented, blank, or a
    column-0 `- ` list item) belong to the key above them. Lines before the first key have key None."""
    out: list[tuple[str | None, str]] = []
    for line in block.splitlines(keepends=True):
        match = re.match(r"^([^\s#'\"-][^:]*?|\"[^\"]+\"|'[^']+'):(\s|$)", line)
        if match:
            out.append((match.group(1).strip("\"'"), line))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            out.append((None, line))
    return out


def raw_entries(text: str) -> dict[str, str]:
    """Each top-level frontmatter key of `text` with its raw lines; {} when there is no frontmatter."""
    try:
        block, _ = split(text)
    except FrontmatterError:
        return {}
    return {key: raw if raw.endswith("\n") else raw + "\n" for key, raw in entries(block) if key}


def carried_keys(original: str) -> dict[str, str]:
    """The original's frontmatter entries skillbuild does not write (allowed-tools, license, user-invocable,
    argument-hint, hooks, ...), raw, to be carried over verbatim."""
    return {k: raw for k, raw in raw_entries(original).items() if k not in WRITTEN_KEYS}


def carry_over(text: str, carried: dict[str, str]) -> str:
    """`text` with each carried key's raw lines in place of whatever the candidate had for that key."""
    if not carried:
        return text
    try:
        block, body = split(text)
    except FrontmatterError:
        return text  # the gates name the problem
    kept = "".join(raw for key, raw in entries(block) if key not in carried)
    kept = kept if not kept or kept.endswith("\n") else kept + "\n"
    return "---\n" + kept + "".join(carried.values()) + "---\n" + body


def content_hash(text: str) -> str:
    """Hash of what a maintainer can edit: the frontmatter without its `metadata` map, and the body."""
    try:
        block, body = split(text)
    except FrontmatterError:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    front = "".join(raw for key, raw in entries(block) if key != "metadata")
    return hashlib.sha256((front + "\0" + body).encode("utf-8")).hexdigest()[:16]


def is_hand_written(text: str) -> bool:
    """Not ours (no provenance), or ours edited by hand since it was written (its content hash no longer
    matches). Provenance older than the content hash counts as ours, unedited."""
    return hand_written_given(text, provenance(text))


def hand_written_given(text: str, mark: dict[str, str] | None) -> bool:
    """`is_hand_written` when the caller parsed the provenance (`mark`) already."""
    if mark is None:
        return True
    recorded = mark.get(CONTENT_HASH)
    return bool(recorded) and recorded != content_hash(text)


def read_hand_written(path: Path | None) -> str | None:
    """The text of a hand-written (or hand-edited) SKILL.md at `path`, or None when there is none."""
    if path is None or not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    return text if is_hand_written(text) else None


def read_frontmatter_fields(text: str) -> dict[str, str]:
    """Loose `key: value` reading of a Markdown file's frontmatter (command and agent files are messy)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    fields: dict[str, str] = {}
    for line in text[3:end].splitlines():
        match = re.match(r"^([A-Za-z][\w-]*):\s*(.*)$", line)
        if match:
            fields[match.group(1).lower()] = match.group(2).strip().strip("\"'")
    return fields
