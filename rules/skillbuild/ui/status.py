"""Each plugin's state, judged from discovery and the provenance in its SKILL.md (no doit state needed).

States: fresh (ours, made from the current inputs, prompts and model), stale (will be rebuilt),
kept (hand-written: full size, or any size under the offline provider), skipped (external source or
untracked and not built), failed (bad input). A generated file edited by hand counts as hand-written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skillbuild.skill import skillmd
from skillbuild.discovery import Marketplace, Plugin


@dataclass
class Row:
    key: str
    name: str
    state: str
    bytes: int | None
    detail: str


def keep_reason(plugin: Plugin, keep_min_bytes: int, provider: str, saved_original: Path | None = None) -> str:
    """Why the SKILL.md at the target is kept as it is, or "" when it may be rebuilt.

    Hand-written work (no provenance of ours, or ours edited by hand) is kept when it is full size, and
    always under the offline provider, whose extractive text could only be worse than a maintainer's; so
    is, under the offline provider, a file of ours that replaced one (`saved_original`: build.py keeps it).
    """
    text = skillmd.read_hand_written(plugin.target)
    if text is None:
        made_from_one = saved_original is not None and saved_original.is_file()
        if provider == "offline" and made_from_one and plugin.target is not None and plugin.target.is_file():
            return "made from a hand-written original, the offline provider never replaces it"
        return ""
    size = len(text.encode())
    what = "hand-written" if skillmd.provenance(text) is None else "hand-edited since skillbuild wrote it"
    if size >= keep_min_bytes:
        return f"{what}, {size} bytes"
    if provider == "offline":
        return f"{what}, the offline provider never replaces it"
    return ""


def is_kept(plugin: Plugin, keep_min_bytes: int, provider: str, saved_original: Path | None = None) -> bool:
    return bool(keep_reason(plugin, keep_min_bytes, provider, saved_original))


def staleness(settings, plugin: Plugin, expected: dict[str, str]) -> str:
    """Why the plugin must be rebuilt, or "" when its SKILL.md is current."""
    target = plugin.target
    if target is None or not target.is_file():
        return "no SKILL.md yet"
    text = target.read_text(encoding="utf-8", errors="replace")
    mark = skillmd.provenance(text)
    if mark is None or skillmd.is_hand_written(text):
        return (f"hand-written SKILL.md under {settings.keep_min_bytes} bytes: an input to its replacement, "
                "which must pass the never-worse gate")
    changed = [k for k, v in expected.items() if mark.get(k) != v]
    return ("changed: " + ", ".join(changed)) if changed else ""


def rows(settings, market: Marketplace, expected_for) -> list[Row]:
    from skillbuild.build import saved_original_path  # deferred: build loads the providers

    out = []
    for plugin in market.plugins:
        size = plugin.target.stat().st_size if plugin.target and plugin.target.is_file() else None
        note = "" if plugin.tracked else " (not in the catalog)"
        if plugin.state == "external":
            out.append(Row(plugin.key, plugin.name, "skipped", None, plugin.reason))
        elif plugin.state == "untracked":
            out.append(Row(plugin.key, plugin.name, "skipped", size, plugin.reason))
        elif plugin.state == "error":
            out.append(Row(plugin.key, plugin.name, "failed", None, plugin.reason))
        elif why := keep_reason(plugin, settings.keep_min_bytes, settings.provider,
                                saved_original_path(settings, plugin)):
            out.append(Row(plugin.key, plugin.name, "kept", size, f"kept: {why}" + note))
        else:
            why = staleness(settings, plugin, expected_for(plugin))
            old = [plugin.relpath(p) for p in plugin.old_skills]
            extra = f"; older SKILL.md left in place: {', '.join(old)}" if old else ""
            out.append(Row(plugin.key, plugin.name, "stale" if why else "fresh", size, (why or "up to date")
                           + note + extra))
    return out


def format_table(table: list[Row], outcomes: dict | None = None) -> str:
    """Fixed-width text: plugin, state, bytes, last outcome from the audit DB and when, then the detail."""
    from skillbuild.ui.report import status_rows

    joined = status_rows([(r.name, r.state, r.bytes) for r in table], outcomes or {})
    width = max([len(r.key) for r in table] + [6])
    when = max([len(j.when) for j in joined] + [4])
    lines = [f"{'plugin':<{width}}  {'state':<7}  {'bytes':>6}  {'last outcome':<18}  {'when':<{when}}  detail"]
    for r, audit_row in zip(table, joined):
        size = "-" if r.bytes is None else str(r.bytes)
        state = audit_row.state if r.state == "stale" else r.state  # a stale plugin whose last try failed
        detail = r.detail + (f"; last error: {audit_row.error}" if audit_row.error else "")
        lines.append(f"{r.key:<{width}}  {state:<7}  {size:>6}  {audit_row.last_outcome:<18}  "
                     f"{audit_row.when:<{when}}  {detail}")
    counts: dict[str, int] = {}
    for line in lines[1:]:
        state = line[width + 2:width + 9].strip()
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines.append("total: " + (summary or "no plugins found in the catalog or the marketplace folder"))
    return "\n".join(lines)
