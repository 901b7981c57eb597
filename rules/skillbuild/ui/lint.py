"""Actions of `doit lint` (quality score of every SKILL.md) and `doit routing` (trigger routing across the marketplace).

Both read the files as they are on disk, whoever wrote them (offline, Vertex, or a maintainer).
"""
from __future__ import annotations

import json

from doit.exceptions import TaskFailed

from skillbuild.skill import quality, routing
from skillbuild.store import writing


def skills(market) -> list[quality.Skill]:
    """Every plugin's SKILL.md that exists at its target, with the commands and agents discovery found."""
    found = []
    for plugin in market.plugins:
        if plugin.path is None or plugin.target is None or not plugin.target.is_file():
            continue
        found.append(quality.Skill(
            plugin.key, plugin.target, plugin.target.read_text(encoding="utf-8", errors="replace"),
            tuple(plugin.commands), tuple(plugin.agents),
            (plugin.name, plugin.key, str(plugin.manifest.get("name") or plugin.name))))
    return found


def scores(settings, market) -> list[quality.Score]:
    return quality.score_all(skills(market), max_bytes=settings.max_bytes, max_body_lines=settings.max_body_lines)


def print_lint(settings, market) -> TaskFailed | None:
    """`doit lint`: each file's score and what cost points, the summary line last; fails below min_quality."""
    scored = scores(settings, market)
    for one in scored:
        print(one.line())
    print(quality.summary(scored, settings.min_quality), flush=True)
    low = [s.key for s in scored if s.points < settings.min_quality]
    if low:
        return TaskFailed(f"{len(low)} SKILL.md file(s) score below min_quality {settings.min_quality}: "
                          + ", ".join(low[:10]))
    return None


def descriptions(market) -> dict[str, str]:
    """Each written SKILL.md's description: the only text Claude Code routes on. Plugins without one have
    nothing to route to and are left out (as documents and as queries)."""
    out = {}
    for skill in skills(market):
        description = quality.parts(skill.text)[0]
        if description:
            out[skill.key] = description
    return out


def triggers(settings, market, keys) -> dict[str, list[str]]:
    """Each routed plugin's trigger phrases, from its analysis (none for a plugin never analysed, e.g. a kept
    hand-written file)."""
    from skillbuild import build

    out = {}
    for plugin in market.plugins:
        path = build.analysis_path(settings, plugin)
        if plugin.key in keys and path.is_file():
            phrases = json.loads(path.read_text(encoding="utf-8")).get("triggers") or []
            if phrases:
                out[plugin.key] = [str(p) for p in phrases]
    return out


def print_routing(settings, market) -> TaskFailed | None:
    """`doit routing`: self-routing of every plugin's trigger phrases, the eval file apart, the listing budget.

    Exits 1 only for a malformed eval file, or one whose top-1 accuracy is below `min_eval_top1`: self-routing
    is a lower bound on trouble (phrases and descriptions come from one analysis), never a failure."""
    try:
        evals = routing.read_evals(settings.marketplace)
    except ValueError as exc:
        return TaskFailed(f"routing: {exc}")
    docs = descriptions(market)
    queries = triggers(settings, market, docs)
    if docs:
        result = routing.route(docs, queries, evals=evals, description_limit=settings.description_limit,
                               listing_budget=settings.listing_budget_chars)
    else:  # nothing to route to: every labelled query misses, but one that wants no plugin is right
        print("  no SKILL.md with a description yet: build first (`doit`)")
        result = routing.RoutingReport(routing.Accuracy(0, 0, 0), listing_budget=settings.listing_budget_chars)
        if evals is not None:
            right = sum(1 for case in evals if case.get("plugin") is None)
            result.evals = routing.Accuracy(right, right, len(evals))
    unrouted = sorted(p.key for p in market.plugins if p.state == "ok" and p.key not in docs)
    if unrouted:
        print(f"  not routed (no SKILL.md description): {', '.join(unrouted[:10])}"
              + (f" and {len(unrouted) - 10} more" if len(unrouted) > 10 else ""))
    no_phrases = sorted(set(docs) - set(queries))
    if no_phrases:
        print(f"  no trigger phrases (no analysis): {', '.join(no_phrases[:10])}")
    print("\n".join(routing.report_lines(result)), flush=True)
    writing.atomic_write(settings.routing_file, json.dumps(saved(result), indent=1))
    if result.evals is not None and result.evals.rate(result.evals.top1) < settings.min_eval_top1:
        return TaskFailed(f"routing: eval top-1 accuracy {result.evals.rate(result.evals.top1):.2f} is below "
                          f"min_eval_top1 {settings.min_eval_top1:g}")
    return None


def saved(result: routing.RoutingReport) -> dict:
    """What the report page reads back."""
    return {"summary": result.summary(), "evals_summary": result.evals_summary(),
            "confusable": [list(pair) for pair in result.confusable],
            "misrouted": {k: len(v) for k, v in result.misrouted.items()},
            "over_limit": [list(item) for item in result.over_limit],
            "listing_chars": result.listing_chars, "listing_budget": result.listing_budget}


def read_saved(settings) -> dict | None:
    """The last routing result, or None when `doit routing` never ran (or its file is unreadable)."""
    try:
        return json.loads(settings.routing_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
