"""Frontmatter: a SKILL.md's (split, parse, render, provenance) and a loose reader of any Markdown file's.

SKILL.md frontmatter is parsed with strictyaml, as the Agent Skills validator does; commands and agents
are read loosely (`read_frontmatter_fields`), since those files are messy.

Rendering always double-quotes strings (JSON escapes are valid YAML), so values with `: `, `#` or
quotes stay safe under strictyaml, and never emits flow lists, which strictyaml rejects.
"""
from __future__ import annotations

import json
import re
from typing import Any


ALLOWED_KEYS = ("name", "description", "license", "allowed-tools", "metadata", "compatibility")
PROVENANCE_PREFIX = "skillbuild"


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


def with_provenance(text: str, fields: dict[str, str]) -> str:
    """Re-render a candidate with our provenance merged into `metadata` (ours win on clashes)."""
    meta, body = parse(text)
    metadata = dict(meta.get("metadata") or {})
    metadata.update(fields)
    meta["metadata"] = metadata
    return render(meta, body)


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
