"""Markdown checks and rewrites shared by the gates and the offline writer: code, placeholders, sections, links."""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+\S")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
HTML_COMMENT = re.compile(r"<!--[\s\S]*?(?:-->|$)")
# Holes a template or a human was meant to fill; outside code they are never content.
PLACEHOLDERS = re.compile(
    r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_PLACEHOLDER\b|\bPLACEHOLDER\b|\{\{[^{}\n]*\}\}"
    r"|<(?i:your)[-_ ][^<>\n]*>|\[(?i:your)[ _-][^\]\n]*\]|\[(?i:insert)[^\]\n]*\]|\$\([^()\n]*\)"
    r"|\bTODO\b|\bFIXME\b|\bTBD\b|(?i:lorem ipsum)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
LINK_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def strip_comments(text: str) -> str:
    """HTML comments removed (an unclosed one runs to the end): text a reader never sees is never an input."""
    return HTML_COMMENT.sub("", text)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code, with inline code blanked out; fence lines are left out."""
    out: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append((number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)))
    return out


def placeholders(text: str) -> list[str]:
    """'DESCRIPTION_PLACEHOLDER on line 7' for each hole outside code (template syntax in code is real)."""
    return [f"{m.group(0)} on line {n}" for n, line in prose_lines(text) for m in PLACEHOLDERS.finditer(line)]


def has_placeholder(line: str) -> bool:
    """A line of prose (inline code ignored) holding a placeholder."""
    return bool(PLACEHOLDERS.search(INLINE_CODE.sub("", line)))


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line index, level, line) of every ATX heading outside fenced code."""
    found, in_fence = [], False
    for index, line in enumerate(text.splitlines()):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and HEADING.match(line):
            found.append((index, len(line) - len(line.lstrip("#")), line.strip()))
    return found


def empty_sections(text: str) -> list[str]:
    """Headings with nothing under them before the next heading of the same or a higher level."""
    lines = text.splitlines()
    marks = headings(text)
    empty = []
    for i, (index, level, line) in enumerate(marks):
        end = next((j for j, lv, _ in marks[i + 1:] if lv <= level), len(lines))
        if not any(x.strip() for x in lines[index + 1:end]):
            empty.append(f"'{line}' on line {index + 1}")
    return empty


def drop_empty_sections(text: str) -> str:
    """The text without its empty sections (repeated: dropping one can empty its parent)."""
    while True:
        lines = text.splitlines()
        marks = headings(text)
        gone = set()
        for i, (index, level, _) in enumerate(marks):
            end = next((j for j, lv, _ in marks[i + 1:] if lv <= level), len(lines))
            if not any(x.strip() for x in lines[index + 1:end]):
                gone.add(index)
        if not gone:
            return text
        text = "\n".join(x for k, x in enumerate(lines) if k not in gone) + "\n"
        text = re.sub(r"\n{3,}", "\n\n", text)


def link_target(raw: str) -> str | None:
    """The path part of a relative link target, or None for URLs, anchors, absolute and home paths."""
    raw = raw.strip("<>").strip()
    if not raw or raw.startswith(("#", "/", "~", "\\")) or SCHEME.match(raw) or "{" in raw or "$" in raw:
        return None
    path = unquote(raw.split("#", 1)[0].split("?", 1)[0])
    return path or None


def relative_links(text: str) -> list[tuple[int, str, str]]:
    """(line number, written target, path part) of every relative link outside code."""
    found = []
    for number, line in prose_lines(text):
        raws = [m.group(1) for m in LINK.finditer(line)]
        definition = LINK_DEFINITION.match(line)
        if definition:
            raws.append(definition.group(1))
        for raw in raws:
            path = link_target(raw)
            if path:
                found.append((number, raw, path))
    return found


def broken_links(text: str, folder: Path, pending=()) -> list[str]:
    """'references/x.md on line 9' for each relative link whose target does not exist from `folder`;
    `pending`: paths relative to `folder` of files written together with this one (they count as existing)."""
    # Lexical: the skill's folder may not exist yet, and `missing/../x` does not resolve on disk.
    coming = {os.path.normpath(folder / p) for p in pending}
    return [f"{raw} on line {n}" for n, raw, path in relative_links(text)
            if os.path.normpath(folder / path) not in coming and not os.path.exists(os.path.normpath(folder / path))]


def rebase(path: str, source_dir: str, target_dir: str) -> str:
    """A link `path` written in a file in `source_dir`, as seen from `target_dir` (both relative to one root)."""
    joined = posixpath.normpath(posixpath.join(source_dir or ".", path))
    moved = posixpath.relpath(joined, target_dir or ".")
    return moved + ("/" if path.endswith("/") and not moved.endswith("/") else "")


def rebase_links(text: str, source_dir: str, target_dir: str, exists) -> str:
    """Links of a document moved from `source_dir` to `target_dir`: rewritten, or dropped (text kept) when
    `exists(path relative to the root)` says the target is missing."""
    def one(match: re.Match) -> str:
        whole, raw = match.group(0), match.group(1)
        path = link_target(raw)
        if not path:
            return whole
        rooted = posixpath.normpath(posixpath.join(source_dir or ".", path))
        if not exists(rooted):
            label = re.match(r"!?\[(.*)\]\(", whole, re.S)
            return label.group(1) if label and not whole.startswith("!") else ""
        new = rebase(path, source_dir, target_dir) + raw.strip("<>")[len(raw.strip("<>").split("#", 1)[0]):]
        start, end = match.start(1) - match.start(), match.end(1) - match.start()
        return whole[:start] + new + whole[end:]  # the target only: a label may repeat the path

    out, in_fence = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
        out.append(line if in_fence else LINK.sub(one, line))
    return "\n".join(out)


def folder_of(rel: str) -> str:
    return posixpath.dirname(rel.replace(os.sep, "/"))
