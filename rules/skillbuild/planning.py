"""`doit plan` and `doit quota`: what the next build will cost, and where today's quota stands.

Both only read: the marketplace, the response cache, the audit DB (opened read-only) and the throttle's
state. Neither sends an API call nor writes to the marketplace.

A stale plugin needs an analysis call and a generation call, each unless the response cache already
holds its answer. The cache keys come from the call path (`Caller.cached_analysis` / `cached_generation`,
keyed on the requests the provider builds), so a hit counted here is a hit in the build. A generation
whose analysis is not cached yet cannot be cached either (its request holds that analysis), so it
counts as a call.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable

from skillbuild import discovery, build
from skillbuild.store.audit import AuditDB
from skillbuild.ui import status
from skillbuild.discovery import Marketplace, Plugin
from skillbuild.calls.throttle import Limits, eta_seconds, format_time, recommend

# Output tokens per call before the audit DB has measured any (Gemini 2.5 Flash, thinking included).
DEFAULT_OUTPUT_TOKENS = {"analyse": 1500, "generate": 3500}
DEFAULT_ANALYSIS_BYTES = 3000  # size of an analysis JSON inside a generation request, before measured
BYTES_PER_TOKEN = 4  # the estimate the throttle uses too


@dataclass
class PluginPlan:
    key: str
    reason: str  # why it is stale
    analysis_call: bool
    generation_call: bool
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def calls(self) -> int:
        return int(self.analysis_call) + int(self.generation_call)


@dataclass
class Averages:
    """Output tokens per call and analysis size, from the audit DB when it has them."""

    output_tokens: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OUTPUT_TOKENS))
    measured: dict[str, int] = field(default_factory=dict)  # phase -> calls the average is from
    analysis_bytes: float = DEFAULT_ANALYSIS_BYTES
    latency_s: float | None = None  # mean seconds per successful HTTP attempt
    repair_rate: float = 0.0  # repairs per generation


@dataclass
class Plan:
    provider: str
    model: str
    plugins: list[PluginPlan]
    states: dict[str, int]  # every plugin's state (fresh, stale, kept, ...) -> count
    averages: Averages
    price_in: float
    price_out: float
    limits: Limits | None = None
    snapshot: dict[str, Any] | None = None
    workers: Any = None  # calls.workers.Workers: what a plain `doit` runs with

    @property
    def calls(self) -> int:
        return sum(p.calls for p in self.plugins)

    @property
    def input_tokens(self) -> int:
        return sum(p.input_tokens for p in self.plugins)

    @property
    def output_tokens(self) -> int:
        return sum(p.output_tokens for p in self.plugins)

    @property
    def cost(self) -> float:
        return (self.input_tokens * self.price_in + self.output_tokens * self.price_out) / 1e6

    def eta(self) -> float:
        """Real seconds the throttle needs for the calls (API latency not included)."""
        if self.limits is None or self.snapshot is None:
            return 0.0
        return eta_seconds(self.calls, self.limits, self.snapshot, plugins=len(self.plugins))


# ---------------------------------------------------------------- reading recorded data


def audit_averages(settings, provider: str, model: str) -> Averages:
    """Averages of successful calls recorded for this provider and model."""
    found = Averages()
    audit = AuditDB.reader(settings.audit_db)
    if audit is None:
        return found
    try:
        rows = audit.output_averages(provider, model)
        repairs, generations = audit.repair_counts(provider, model)
        latency = audit.mean_latency()
    except sqlite3.Error:
        return found  # an older or foreign DB: fall back to the defaults
    finally:
        audit.close()
    for row in rows:
        phase = "generate" if row["phase"] == "repair" else row["phase"]
        if phase in found.measured:
            continue  # generate rows win over repair rows
        found.output_tokens[phase] = row["tokens"]
        found.measured[phase] = row["n"]
        if phase == "analyse" and row["bytes"]:
            found.analysis_bytes = row["bytes"]
    if generations:
        found.repair_rate = repairs / generations
    found.latency_s = latency
    return found


# ---------------------------------------------------------------- the plan


def _tokens(*texts: str) -> int:
    return sum(len(t.encode("utf-8")) for t in texts) // BYTES_PER_TOKEN


def _api_plan(caller, plugin: Plugin, reason: str, context, prompts: dict[str, str],
              avg: Averages) -> PluginPlan:
    """Calls and tokens of one stale plugin with an API provider; cache hits cost nothing."""
    plan = PluginPlan(plugin.key, reason, analysis_call=True, generation_call=True)
    hit = caller.cached_analysis(context, prompts["analysis"])
    if hit is None:
        message = caller.analysis_request(context, prompts["analysis"]).message
        plan.input_tokens += _tokens(prompts["analysis"], message)
        plan.output_tokens += round(avg.output_tokens["analyse"])
        analysis: dict = {}
        extra = round(avg.analysis_bytes) // BYTES_PER_TOKEN  # the analysis it will send, not known yet
    else:
        plan.analysis_call = False
        analysis, extra = hit.value, 0
        plan.generation_call = caller.cached_generation(context, analysis, prompts["generation"]) is None
    if plan.generation_call:
        message = caller.generation_request(context, analysis, prompts["generation"]).message
        plan.input_tokens += _tokens(prompts["generation"], message) + extra
        plan.output_tokens += round(avg.output_tokens["generate"])
    return plan


def make_plan(settings, market: Marketplace, expected_for: Callable[[Plugin], dict[str, str]],
              model: str, throttle: Any = None) -> Plan:
    """The plan for the next `doit` (stale plugins by their SKILL.md provenance, see ui/status.py)."""
    rows = status.rows(settings, market, expected_for)
    states: dict[str, int] = {}
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    by_key = {p.key: p for p in market.plugins}
    stale = [(by_key[r.key], r.detail) for r in rows if r.state == "stale"]
    avg = audit_averages(settings, settings.provider, model)
    plan = Plan(settings.provider, model, [], states, avg, settings.price_input_per_mtok,
                settings.price_output_per_mtok)
    if settings.provider == "offline":
        plan.plugins = [PluginPlan(p.key, why, False, False) for p, why in stale]
        return plan
    from skillbuild.calls import caller_for

    caller = caller_for(settings, paced=False)  # nothing is sent: only cache keys are computed
    prompts = {name: build.read_prompt(settings, name) for name in ("analysis", "generation")}
    for plugin, why in stale:
        context, _ = build.prepared_context(settings, plugin)  # the context the build would send
        plan.plugins.append(_api_plan(caller, plugin, why, context, prompts, avg))
    if throttle is not None:
        plan.limits, plan.snapshot = throttle.limits, throttle.snapshot()
    return plan


# ---------------------------------------------------------------- text


def duration(seconds: float) -> str:
    """'0 s', '42 s', '12 min 5 s', '3 h 07 min', '2 d 4 h'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _money(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _average_note(avg: Averages) -> str:
    parts = []
    for phase in ("analyse", "generate"):
        tokens = round(avg.output_tokens[phase])
        n = avg.measured.get(phase)
        parts.append(f"{phase} {tokens} ({f'average of {n} recorded' if n else 'default guess, none recorded'})")
    return "output tokens per call: " + ", ".join(parts)


def format_plan(plan: Plan) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(plan.states.items())) or "no plugins"
    lines = [f"plan for the next `doit` (provider {plan.provider}, model {plan.model}): nothing is sent, "
             "nothing is written", f"plugins: {states}"]
    if not plan.plugins:
        lines.append("nothing to build: every SKILL.md is current")
        return "\n".join(lines)
    width = max(len(p.key) for p in plan.plugins)
    lines.append(f"\n{'stale plugin':<{width}}  calls  {'in tok':>7}  {'out tok':>7}  why")
    for p in plan.plugins:
        cached = [name for name, call in (("analysis", p.analysis_call), ("generation", p.generation_call))
                  if not call]
        note = f" (cached: {', '.join(cached)})" if cached and plan.provider != "offline" else ""
        lines.append(f"{p.key:<{width}}  {p.calls:>5}  {p.input_tokens:>7}  {p.output_tokens:>7}  {p.reason}{note}")
    lines.append("")
    if plan.workers is not None:
        lines.append(f"workers: {plan.workers.count} ({plan.workers.why})")
    if plan.provider == "offline":
        lines.append(f"API calls: 0 (the offline provider calls nothing); {len(plan.plugins)} plugin(s) to build")
        return "\n".join(lines)
    hits = 2 * len(plan.plugins) - plan.calls
    lines.append(f"API calls: {plan.calls} for {len(plan.plugins)} stale plugin(s) "
                 f"({hits} answer(s) already in the response cache, not counted)")
    if plan.averages.repair_rate:
        lines.append(f"  plus about {plan.averages.repair_rate * sum(p.generation_call for p in plan.plugins):.0f} "
                     f"repair call(s): {100 * plan.averages.repair_rate:.0f} % of recorded generations needed one")
    lines.append(f"tokens (estimate): in {plan.input_tokens:,}, out {plan.output_tokens:,}; "
                 + _average_note(plan.averages))
    lines.append(f"cost (estimate): {_money(plan.cost)} at ${plan.price_in:g} in / ${plan.price_out:g} out per "
                 "million tokens (set price_input_per_mtok / price_output_per_mtok)")
    lines += _quota_lines(plan)
    return "\n".join(lines)


def _quota_lines(plan: Plan) -> list[str]:
    snap, lim = plan.snapshot, plan.limits
    if snap is None or lim is None:
        return []
    out = [f"quota today: {snap['calls_today']} of {snap['budget']} calls used, {snap['remaining']} left "
           f"(rpd {lim.rpd} / safety factor {lim.safety_factor:g}); resets at {snap['resets_at_text']}"]
    eta = plan.eta()
    pace = f"one call every {snap['interval_s']:.1f} s (effective rpm {snap['effective_rpm']:.2f}){_scaled(lim)}"
    line = f"ETA under the current limits: {duration(eta)}, {pace}; API latency not included"
    if plan.calls > snap["remaining"]:
        line += f"; {plan.calls - snap['remaining']} call(s) must wait for quota resets"
    out.append(line)
    latency = plan.averages.latency_s
    if latency and plan.workers is not None:
        # Each worker has one call in flight: with too few, the latency and not the quota sets the pace.
        per_worker = max(latency, snap["interval_s"] * plan.workers.count) / plan.workers.count
        out.append(f"  with the recorded latency ({latency:.1f} s per call) {plan.workers.count} worker(s) "
                   f"need about {duration(max(eta, plan.calls * per_worker))}")
    return out


def _scaled(lim: Limits) -> str:
    return f" (real seconds, time_scale {lim.time_scale:g})" if lim.time_scale != 1 else ""


# ---------------------------------------------------------------- doit quota


def audit_tokens_since(settings, since: float) -> tuple[int, int, int, int] | None:
    """(calls, input tokens, output tokens, calls of unknown outcome) this marketplace's audit recorded since
    `since` (epoch). A call of unknown outcome (in flight when its run was killed) counts as possibly billed."""
    from datetime import datetime, timezone

    audit = AuditDB.reader(settings.audit_db)
    if audit is None:
        return None
    start = datetime.fromtimestamp(since, timezone.utc).isoformat(timespec="milliseconds")
    try:
        return (*audit.usage_since(start), audit.unknown_calls_since(start))
    except sqlite3.Error:
        return None
    finally:
        audit.close()


def format_quota(settings, throttle) -> str:
    """Today's use, the pace, recent days and the recommendation, from the throttle's recorded calls."""
    lim, snap = throttle.limits, throttle.snapshot()
    waiting = snap["calls_today"] - snap["sent_today"]
    lines = [
        f"quota day: began {snap['day_start_text']}; resets at {snap['resets_at_text']}",
        f"calls today: {snap['sent_today']} sent" + (f" (+{waiting} waiting to be sent)" if waiting else "")
        + f"; budget {snap['budget']} (rpd {lim.rpd} / safety factor {lim.safety_factor:g}); "
        f"{snap['remaining']} left",
        f"tokens today: {snap['tokens_today']:,} (input + output, every marketplace using this quota)",
    ]
    mine = audit_tokens_since(settings, snap["day_start"])
    if mine is not None:
        unknown = f" ({mine[3]} of unknown outcome, possibly billed)" if mine[3] else ""
        lines.append(f"  this marketplace: {mine[0]} call(s){unknown}, input {mine[1]:,}, output {mine[2]:,} tokens")
    lines.append(f"429s today: {snap['http_429_today']}")
    pace = (f"pace: rate factor {snap['rate_factor']:.2f}, effective rpm {snap['effective_rpm']:.2f} "
            f"(rpm {lim.rpm:g} / safety factor {lim.safety_factor:g}), one call every "
            f"{snap['interval_s']:.1f} s{_scaled(lim)}")
    if settings.pace_preset != "default":
        pace += f", preset {settings.pace_preset}"
    lines.append(pace)
    if snap["blocked_until"]:
        lines.append(f"  the server asked to wait: no call before {format_time(snap['blocked_until'], lim.quota_tz)}")
    if snap["rest_until"]:
        lines.append(f"  resting (every {lim.rest_every} plugins) until {format_time(snap['rest_until'], lim.quota_tz)}")
    days = throttle.history()
    if days:
        lines.append("\nrecent quota days:  calls  tokens      429s  peak/min")
        for d in days:
            lines.append(f"  {d['day']}  {d['calls']:>5}  {d['tokens']:>10,}  {d['http_429']:>4}  "
                         f"{d['peak_per_minute']:>8}")
    lines.append("\nrecommendation: " + recommend(days, lim))
    return "\n".join(lines)
