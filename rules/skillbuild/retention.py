"""Retention of what grows without bound: unreachable response cache entries, old run logs, old rejected candidates.

`doit prune [cache=1] [logs=1] [rejected=1] [dry=1]` (or the same options after `doit clean prune`) removes them;
with no option it prunes all three. It never touches the audit DB, backups, archives, SKILL.md files or the
analysis cache: only the three folders below, each from Settings.

A response cache entry is reachable when a build with the current inputs, prompts, provider, model and
settings would look it up: the analysis request of every plugin that is built, the generation request made
from its current analysis, and the repair request whose feedback is the gates' reasons about that cached
generation. The keys come from the call path exactly as `doit plan` computes them
(`calls.caller_for(settings, paced=False)` + `build.prepared_context`), so every other entry could only be
read again after the inputs went back to an old state, and is paid for once more in that case.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from skillbuild.discovery import Marketplace, Plugin

DAY = 86400.0


@dataclass
class Pruned:
    """What one prune removed (or would remove with dry=1), per kind."""
    dry: bool = False
    removed: dict[str, list[Path]] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, paths: list[Path]) -> None:
        self.removed[kind] = paths
        self.bytes[kind] = sum(_size(p) for p in paths)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry else "removed"
        return [f"{kind}: {verb} {len(paths)} file(s), {self.bytes[kind]:,} bytes"
                for kind, paths in self.removed.items()] + self.notes


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def older_than(folder: Path, days: int, now: float | None = None) -> list[Path]:
    """Files directly in `folder` last modified more than `days` days ago."""
    if not folder.is_dir():
        return []
    cutoff = (now if now is not None else time.time()) - days * DAY
    return sorted(p for p in folder.iterdir() if p.is_file() and p.stat().st_mtime < cutoff)


def _analysis_for(settings, plugin: Plugin, caller, context, prompt: str) -> dict | None:
    """The analysis a generation of this plugin would send: the saved file the build loads, else the cached one."""
    from skillbuild import build

    try:
        return json.loads(build.analysis_path(settings, plugin).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        hit = caller.cached_analysis(context, prompt)
        return hit.value if hit is not None else None


def plugin_keys(settings, plugin: Plugin, caller, prompts: dict[str, str]) -> set[str]:
    """Cache keys a build of `plugin` with the current inputs and settings would look up."""
    from skillbuild import build
    from skillbuild.calls import cache_key

    original = build.original_text(settings, plugin)
    context, _ = build.prepared_context(settings, plugin, original)
    keys = {cache_key(caller.analysis_request(context, prompts["analysis"]))}
    analysis = _analysis_for(settings, plugin, caller, context, prompts["analysis"])
    if analysis is None:
        return keys
    keys.add(cache_key(caller.generation_request(context, analysis, prompts["generation"])))
    generated = caller.cached_generation(context, analysis, prompts["generation"])
    if generated is not None and caller.can_repair:
        _, _, reasons = build.gated(settings, plugin, caller, generated, original)
        if reasons:
            keys.add(cache_key(caller.generation_request(context, analysis, prompts["generation"], reasons)))
    return keys


def reachable_keys(settings, market: Marketplace) -> set[str]:
    """Every cache key the current plugins' builds would look up (see the module docstring)."""
    from skillbuild import build
    from skillbuild.calls import caller_for

    caller = caller_for(settings, paced=False)  # nothing is sent: only keys are computed
    prompts = {name: build.read_prompt(settings, name) for name in ("analysis", "generation")}
    keys: set[str] = set()
    for plugin in market.buildable():
        keys |= plugin_keys(settings, plugin, caller, prompts)
    return keys


def unreachable_entries(settings, market: Marketplace) -> list[Path]:
    """Response cache entries no current plugin input reaches."""
    folder = settings.responses_dir
    if not folder.is_dir():
        return []
    keep = reachable_keys(settings, market)
    return sorted(p for p in folder.glob("??/*.json") if p.stem not in keep)


def prune(settings, market: Marketplace, *, cache: bool, logs: bool, rejected: bool, dry: bool = False) -> Pruned:
    """Remove (or, `dry`, list) what the chosen kinds hold beyond retention."""
    from skillbuild.calls import caller_for

    out = Pruned(dry=dry)
    if cache:
        if caller_for(settings, paced=False).cache is None:
            out.notes.append(f"cache: provider {settings.provider} keeps no response cache; the entries in "
                             f"{settings.responses_dir} belong to another provider and are left as they are")
        else:
            try:
                out.add("cache", unreachable_entries(settings, market))
            except (OSError, ValueError) as exc:  # a key not computed could be a reachable entry: prune none
                out.notes.append(f"cache: not pruned, the current keys could not all be computed: {exc}")
    if logs:
        out.add("logs", older_than(settings.logs_dir, settings.retain_days))
    if rejected:
        out.add("rejected", older_than(settings.rejected_dir, settings.retain_days))
    if not dry:
        for paths in out.removed.values():
            for path in paths:
                path.unlink(missing_ok=True)
    return out


KINDS = ("cache", "logs", "rejected")


def run(settings, market: Marketplace, chosen: list[str], dry: bool) -> None:
    """The `doit prune` (and `doit clean prune`) action: the chosen kinds, all three when none is chosen."""
    kinds = set(chosen or KINDS)
    result = prune(settings, market, cache="cache" in kinds, logs="logs" in kinds, rejected="rejected" in kinds,
                   dry=dry)
    print("\n".join(result.lines()) + "\nthe audit DB, backups and SKILL.md files are never pruned", flush=True)
