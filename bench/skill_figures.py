"""Figures of the skill folders skillbuild wrote in a marketplace: sizes, references, empty sections, coverage.

    python bench/skill_figures.py PATH/TO/marketplace

corpus_run.py prints them after a build; run alone, it measures a marketplace built earlier (e.g. one kept
with `corpus_run.py --keep`), so two builds can be compared.
"""
from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

from skillbuild.discovery import discover
from skillbuild.skill import markdown, skillmd, validation

WORK_WITH = re.compile(r"^\s*[-*]\s+work with\b", re.IGNORECASE | re.MULTILINE)


def _names_cut(text: str, commands: set[str], agents: set[str]) -> list[str]:
    """Names cut short: a `/command` or a `name` agent that is a strict prefix of one the plugin defines, and
    a description stopped at exactly 1,024 characters (cut wherever the limit fell)."""
    prose = "\n".join(line for _, line in _outside_fences(text))
    slash = set(re.findall(r"(?<![\w/])/([a-z0-9][a-z0-9-]*)(?![\w/-])", prose))
    named = set(re.findall(r"`([a-z0-9][a-z0-9-]*)` agent", prose))
    cut = [f"/{t}" for t in slash - commands if any(c.startswith(t) for c in commands)]
    cut += [t for t in named - agents if any(a.startswith(t) for a in agents)]
    description = skillmd.read_frontmatter_fields(text).get("description", "")
    return sorted(cut) + (["description cut at 1,024 characters"] if len(description) >= 1024 else [])


def _outside_fences(text: str):
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if markdown.FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield number, line


def _missing(text: str, plugin) -> list[str]:
    out = [f"/{c}" for c in plugin.commands if not re.search(rf"/(?:[\w-]+:)?{re.escape(c)}(?![\w-])", text)]
    out += [a for a in plugin.agents if not re.search(rf"(?<![\w-]){re.escape(a)}(?![\w-])", text)]
    return out


def figures(market: Path) -> dict:
    """What `corpus_run.py` reports about the written skill folders."""
    from skills_ref import validate as ref_validate

    found = discover(market)
    bodies, refs, empty, work_with, cut, missing, broken, invalid, long_bodies = [], 0, [], 0, [], [], [], [], []
    for plugin in found.plugins:
        target = plugin.target
        if target is None or not target.is_file():
            continue
        text = target.read_text(encoding="utf-8", errors="replace")
        if skillmd.provenance(text) is None:
            continue  # hand-written, kept
        body = skillmd.split(text)[1]
        bodies.append(len(body.encode()))
        if len(body.splitlines()) > 500:
            long_bodies.append(plugin.key)
        folder = target.parent
        extra = sorted((folder / "references").glob("*.md")) if (folder / "references").is_dir() else []
        refs += len(extra)
        everything = text + "".join(p.read_text(encoding="utf-8", errors="replace") for p in extra)
        for path, content in [(target, text)] + [(p, p.read_text(encoding="utf-8", errors="replace")) for p in extra]:
            if markdown.empty_sections(content):
                empty.append(str(path.relative_to(market)))
            broken += [f"{path.relative_to(market)}: {b}" for b in markdown.broken_links(content, path.parent)]
        work_with += len(WORK_WITH.findall(text))
        cut += [f"{plugin.key}: {t}" for t in _names_cut(everything, set(plugin.commands), set(plugin.agents))]
        missing += [f"{plugin.key}: {m}" for m in _missing(everything, plugin)]
        problems = ref_validate(folder)
        if problems:
            invalid.append(f"{plugin.key}: {'; '.join(problems)}")
    tokens = [b // 4 for b in bodies]
    return {"files": len(bodies), "median_body_bytes": int(statistics.median(bodies)) if bodies else 0,
            "median_body_tokens": int(statistics.median(tokens)) if tokens else 0,
            "max_body_tokens": max(tokens, default=0), "reference_files": refs, "empty": empty,
            "work_with": work_with, "cut": cut, "missing": missing, "broken": broken, "invalid": invalid,
            "long_bodies": long_bodies, "under_2k": sum(b < 2000 for b in bodies)}


def report(f: dict) -> list[str]:
    lines = [
        f"skill folders written: {f['files']}; median body {f['median_body_bytes']} bytes, ~{f['median_body_tokens']} "
        f"tokens (max ~{f['max_body_tokens']}); bodies under 2,000 bytes: {f['under_2k']}",
        f"reference files written: {f['reference_files']}",
        f"files with an empty section: {len(f['empty'])}",
        f"'Work with' bullets: {f['work_with']}",
        f"names cut mid-word: {len(f['cut'])}",
        f"commands and agents not named in their skill: {len(f['missing'])}",
        f"relative links that do not resolve: {len(f['broken'])}",
        f"skill folders failing `agentskills validate`: {len(f['invalid'])}",
        f"bodies over 500 lines: {len(f['long_bodies'])}",
    ]
    for key in ("empty", "cut", "missing", "broken", "invalid"):
        lines += [f"  {key}: {item}" for item in f[key][:5]]
    return lines


if __name__ == "__main__":
    print("\n".join(report(figures(Path(sys.argv[1])))))
