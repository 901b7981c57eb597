"""Each plugin's state, judged from discovery and the provenance in its SKILL.md (no doit state needed).

States: fresh (ours, made from the current inputs, prompts and model), stale (will be rebuilt),
kept (hand-written: full size, or any size under the offline provider; a generated file edited by hand counts
as hand-written), skipped (external source, shadowed copy, empty, or untracked and not built), failed (bad
input). `judge` is the one answer: `doit status`, `doit plan` and the skill tasks' up-to-date check (`Judged`)
all ask it, so they never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skillbuild.skill import skillmd
from skillbuild.discovery import Marketplace, Plugin
from skillbuild.fingerprints import UPTODATE_SIGNATURE
from skillbuild.memo import active, deps_of
from skillbuild.skill import references


@dataclass
class Row:
    key: str
    name: str
    state: str
    bytes: int | None
    detail: str


@dataclass(frozen=True)
class Target:
    """A SKILL.md as read once: its size in bytes, the provenance it carries, whether it counts as
    hand-written and the reference files it records (not its text: a run remembers one per plugin)."""
    size: int
    mark: dict[str, str] | None
    hand_written: bool
    references: tuple[str, ...] = ()


def read_target(path: Path | None) -> Target | None:
    """The SKILL.md at `path`, or None; read and parsed again only when it or a reference file it records
    changed (the memo: a no-op stats each SKILL.md instead of reading it).

    A load asks about each plugin several times (which tasks to make, the skill task, its up-to-date check);
    the build writing the file changes its stat key, so a later question reads the new file."""
    if path is None:
        return None
    memo, folder = active(), str(path.parent)
    kept = memo.get("target", str(path))
    if kept is not None:
        return Target(kept[0], kept[1], kept[2], tuple(kept[3]))
    deps = deps_of(folder, [path.name])
    if deps is None or not path.is_file():  # a folder at the target is no SKILL.md either
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    mark = skillmd.provenance(text)
    refs = tuple(references.recorded(mark))
    ref_deps = deps_of(folder, list(refs))  # before they are read; one removed: not memoised
    target = Target(len(text.encode()), mark, skillmd.hand_written_given(text, mark, path.parent), refs)
    memo.put("target", str(path), folder, None if ref_deps is None else deps + ref_deps,
             [target.size, mark, target.hand_written, list(refs)])
    return target


def target_paths(path: Path | None) -> list[Path]:
    """The SKILL.md at `path` and the reference files it records: what its skill task writes (doit targets)."""
    if path is None:
        return []
    target = read_target(path)
    return [path, *(path.parent / rel for rel in (target.references if target else ()))]


def keep_reason(plugin: Plugin, keep_min_bytes: int, provider: str, saved_original: Path | None = None) -> str:
    """Why the SKILL.md at the target is kept as it is, or "" when it may be rebuilt.

    Hand-written work (no provenance of ours, or ours edited by hand) is kept when it is full size, and
    always under the offline provider, whose extractive text could only be worse than a maintainer's; so
    is, under the offline provider, a file of ours that replaced one (`saved_original`: build.py keeps it).
    """
    target = read_target(plugin.target)
    if target is None or not target.hand_written:
        made_from_one = saved_original is not None and saved_original.is_file()
        if provider == "offline" and made_from_one and target is not None:
            return "made from a hand-written original, the offline provider never replaces it"
        return ""
    size = target.size
    what = "hand-written" if target.mark is None else "hand-edited since skillbuild wrote it"
    if size >= keep_min_bytes:
        return f"{what}, {size} bytes"
    if provider == "offline":
        return f"{what}, the offline provider never replaces it"
    return ""


def is_kept(plugin: Plugin, keep_min_bytes: int, provider: str, saved_original: Path | None = None) -> bool:
    return bool(keep_reason(plugin, keep_min_bytes, provider, saved_original))


def staleness(settings, plugin: Plugin, expected: dict[str, str]) -> str:
    """Why the plugin must be rebuilt, or "" when its SKILL.md is current."""
    target = read_target(plugin.target)
    if target is None:
        return "no SKILL.md yet"
    mark = target.mark
    if mark is None or target.hand_written:
        return (f"hand-written SKILL.md under {settings.keep_min_bytes} bytes: an input to its replacement, "
                "which must pass the never-worse gate")
    changed = [k for k, v in expected.items() if mark.get(k) != v]
    return ("changed: " + ", ".join(changed)) if changed else ""


def judge(settings, plugin: Plugin, expected_for) -> tuple[str, str]:
    """(state, detail) of one plugin: fresh, stale, kept, skipped or failed, and why."""
    note = "" if plugin.tracked else " (not in the catalog)"
    if plugin.state in ("external", "skipped", "untracked"):
        return "skipped", plugin.reason
    if plugin.state == "error":
        return "failed", plugin.reason
    from skillbuild.build import saved_original_path  # deferred: build loads the providers

    why = keep_reason(plugin, settings.keep_min_bytes, settings.provider, saved_original_path(settings, plugin))
    if why:
        return "kept", f"kept: {why}" + note
    why = staleness(settings, plugin, expected_for(plugin))
    old = [plugin.relpath(p) for p in plugin.old_skills]
    extra = f"; older SKILL.md left in place: {', '.join(old)}" if old else ""
    return ("stale" if why else "fresh"), (why or "up to date") + note + extra


def rows(settings, market: Marketplace, expected_for) -> list[Row]:
    out = []
    for plugin in market.plugins:
        size = plugin.target.stat().st_size if plugin.target and plugin.target.is_file() else None
        state, detail = judge(settings, plugin, expected_for)
        shown = None if plugin.state in ("external", "error") else size
        out.append(Row(plugin.key, plugin.name, state, shown, detail))
    return out


class Judged:
    """doit `uptodate` of a plugin's task: up to date exactly when `judge` gives one of `states`.

    Evaluated when doit checks the task (`doit`, `doit list --status`), never at load.
    """
    __signature__ = UPTODATE_SIGNATURE

    def __init__(self, settings, plugin: Plugin, states: tuple[str, ...] = ("fresh",)):
        self.settings, self.plugin, self.states = settings, plugin, states

    def __call__(self, task, values) -> bool:
        from skillbuild import build  # build needs discovery only; imported here to keep ui free of it at load

        state, _ = judge(self.settings, self.plugin, build.expected_provenance(self.settings))
        return state in self.states


def format_table(table: list[Row], outcomes: dict | None = None, scores: dict[str, int] | None = None) -> str:
    """Fixed-width text: plugin, state, bytes, quality score (when `scores` is given: plugin -> 0-100, `-` for
    a plugin without a SKILL.md), last outcome from the audit DB and when, then the detail."""
    from skillbuild.ui.report import status_rows

    joined = status_rows([(r.key, r.state, r.bytes) for r in table], outcomes or {})
    width = max([len(r.key) for r in table] + [6])
    when = max([len(j.when) for j in joined] + [4])
    score_head = "  score" if scores is not None else ""
    lines = [f"{'plugin':<{width}}  {'state':<7}  {'bytes':>6}{score_head}  {'last outcome':<18}  "
             f"{'when':<{when}}  detail"]
    for r, audit_row in zip(table, joined):
        size = "-" if r.bytes is None else str(r.bytes)
        score = f"  {scores.get(r.key, '-'):>5}" if scores is not None else ""
        state = audit_row.state if r.state == "stale" else r.state  # a stale plugin whose last try failed
        detail = r.detail + (f"; last error: {audit_row.error}" if audit_row.error else "")
        lines.append(f"{r.key:<{width}}  {state:<7}  {size:>6}{score}  {audit_row.last_outcome:<18}  "
                     f"{audit_row.when:<{when}}  {detail}")
    counts: dict[str, int] = {}
    for line in lines[1:]:
        state = line[width + 2:width + 9].strip()
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines.append("total: " + (summary or "no plugins found in the catalog or the marketplace folder"))
    return "\n".join(lines)
