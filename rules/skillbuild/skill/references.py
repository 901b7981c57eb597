"""A skill's reference files: the multi-file answer format, their provenance in SKILL.md, and which are stale.

A skill folder holds SKILL.md and optional `references/*.md`, linked one level deep from the body. A
provider answers with one text: the SKILL.md, then each reference file after a marker line
`<!-- file: references/x.md -->`. The SKILL.md records each reference file it was written with, and the
hash of its content, in the provenance field `references` ("commands.md=0123abcd... agents.md=..."), so a
hand edit to a reference file shows like a hand edit to the SKILL.md, and a file written earlier and no
longer written can be found (and removed only after the plugin's verified backup).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

FIELD = "references"  # provenance field
FOLDER = "references"
MARKER = re.compile(r"^<!--\s*file:\s*(\S+?)\s*-->\s*$", re.MULTILINE)
NAME = re.compile(r"^references/[a-z0-9][a-z0-9._-]*\.md$")


def split(answer: str) -> tuple[str, dict[str, str]]:
    """(SKILL.md text, {rel: text}) from a provider's answer; an answer without markers is all SKILL.md.
    A marker naming a path outside `references/` keeps its text under that path: the gate rejects it."""
    parts = MARKER.split(answer)
    skill = parts[0].strip() + "\n"
    files: dict[str, str] = {}
    for rel, text in zip(parts[1::2], parts[2::2]):
        files[rel.strip()] = text.strip() + "\n"
    return skill, files


def join(skill: str, files: dict[str, str]) -> str:
    """The one-text form `split` reads back."""
    out = skill.rstrip() + "\n"
    for rel, text in sorted(files.items()):
        out += f"\n<!-- file: {rel} -->\n\n{text.strip()}\n"
    return out


def file_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def field_value(files: dict[str, str]) -> str:
    """The provenance value recording `files` (names relative to references/, each with its hash)."""
    return " ".join(f"{rel.split('/', 1)[1]}={file_hash(text)}" for rel, text in sorted(files.items()))


def recorded(mark: dict[str, str] | None) -> dict[str, str]:
    """{rel: hash} of the reference files a SKILL.md's provenance records; {} when none."""
    found: dict[str, str] = {}
    for item in ((mark or {}).get(FIELD) or "").split():
        name, _, digest = item.partition("=")
        rel = f"{FOLDER}/{name}"
        if NAME.match(rel) and digest:
            found[rel] = digest
    return found


def edited(mark: dict[str, str] | None, folder: Path) -> list[str]:
    """Recorded reference files changed or removed by hand since they were written."""
    out = []
    for rel, digest in recorded(mark).items():
        path = folder / rel
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
        if text is None or file_hash(text) != digest:
            out.append(rel)
    return out


def bytes_of(files: dict[str, str]) -> int:
    return sum(len(text.encode("utf-8")) for text in files.values())


def stale(mark: dict[str, str] | None, written: dict[str, str]) -> list[str]:
    """Reference files the previous SKILL.md recorded that the new one no longer writes."""
    return sorted(set(recorded(mark)) - set(written))
