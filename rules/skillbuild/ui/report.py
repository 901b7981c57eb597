"""`doit status` rows and the static HTML report, both read from the audit DB.

The report is one self-contained HTML file: inline CSS and inline SVG charts, no script, no network.
Every figure is also printed as text in an element with a stable id or data attributes, so tests (and
people with a screen reader) read the same numbers the charts draw.
"""
from __future__ import annotations

import html
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skillbuild.store.audit import STATUSES, AuditDB, Outcome
from skillbuild.store.writing import atomic_copy, atomic_write

TARGET_BYTES = (8000, 14000)  # SKILL.md size the generator aims for
TIME_BINS = (0, 5, 10, 20, 30, 60, 120, 300)  # seconds; the last bin is open-ended
QUALITY_BINS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)  # quality score; 100 has its own bar
SIZE_BINS = (0, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 20000)  # bytes; last open-ended
STATUS_COLOURS = {"success": "#2e7d32", "failure": "#c62828", "skipped": "#9e9e9e", "kept": "#1565c0"}
DISCOVERY_STATES = ("fresh", "stale", "kept", "skipped", "failed")  # failed: bad input found by discovery
# One vocabulary for outcomes: the run summary's words (ui/progress.py Summary, `doit status`) for the audit
# statuses the rows hold; the page's headings and legends use these, its data attributes the statuses.
WORDS = {"success": "built", "failure": "failed", "skipped": "skipped", "kept": "kept"}
RUN_ONLY = ("fresh", "restored")  # counted by a run's summary only (runs.counts): no plugin row says them
MIN_BAR_PX = 3.0  # a non-zero value never draws thinner than this: one failure beside 236 successes shows


# --- doit status ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusRow:
    plugin: str
    state: str  # fresh | stale | failed | kept | skipped
    skill_bytes: int | None
    last_outcome: str  # "generate success", "analyse failure", "-" when never built
    when: str  # "2026-11-29 10:15Z (3h ago)" or "-"
    error: str  # the last failure's reason, "" otherwise


def derive_state(discovery_state: str, outcome: Outcome | None) -> str:
    """Discovery's state, except that a stale plugin whose last attempt failed shows as failed."""
    if discovery_state not in DISCOVERY_STATES:
        raise ValueError(f"plugin state {discovery_state!r} is not one of {', '.join(DISCOVERY_STATES)}")
    if discovery_state == "stale" and outcome is not None and outcome.status == "failure":
        return "failed"
    return discovery_state


def _ago(timestamp: str, now: datetime) -> str:
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    secs = max(int((now - then).total_seconds()), 0)
    rel = (f"{secs}s" if secs < 60 else f"{secs // 60}m" if secs < 3600 else f"{secs // 3600}h"
           if secs < 86400 else f"{secs // 86400}d")
    return f"{then:%Y-%m-%d %H:%M}Z ({rel} ago)"


def status_rows(
    plugins: Iterable[tuple[str, str, int | None]], outcomes: dict[str, Outcome], now: datetime | None = None,
) -> list[StatusRow]:
    """One row per (plugin name, discovery state, SKILL.md bytes or None), joined with `AuditDB.last_outcomes()`."""
    now = now or datetime.now(timezone.utc)
    rows = []
    for name, state, size in plugins:
        out = outcomes.get(name)
        rows.append(StatusRow(
            plugin=name, state=derive_state(state, out), skill_bytes=size,
            last_outcome=f"{out.phase or '?'} {out.status}" if out else "-",
            when=_ago(out.timestamp, now) if out else "-",
            error=" ".join((out.error_message or out.error_class or "").split())[:120]
            if out and out.status == "failure" else "",
        ))
    return rows


# --- report data --------------------------------------------------------------------------------------

def histogram(values: Iterable[float], edges: Sequence[float]) -> list[tuple[str, int]]:
    """[(label, count)] with bins [edges[i], edges[i+1]) and a last open bin edges[-1]+."""
    counts = [0] * len(edges)
    for v in values:
        i = max(j for j, e in enumerate(edges) if v >= e) if v >= edges[0] else 0
        counts[i] += 1
    labels = [f"{_num(edges[i])}-{_num(edges[i + 1])}" for i in range(len(edges) - 1)] + [f"{_num(edges[-1])}+"]
    return list(zip(labels, counts))


def _num(x: float) -> str:
    return f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"


def report_data(audit: AuditDB, quota_rpd: int, skill_sizes: dict[str, int] | None = None,
                today: str | None = None, quota_basis: str | None = None, scores: dict[str, int] | None = None,
                routing: dict | None = None) -> dict[str, Any]:
    """Every figure the page shows. `skill_sizes` (plugin -> bytes on disk) overrides the audit's output_bytes;
    `quota_basis` says where `quota_rpd` comes from (e.g. "rpd 1500 / safety factor 3"); `scores`: plugin ->
    quality score (skill/quality.py); `routing`: the last `doit routing` result (ui/lint.py `saved`)."""
    scores = scores or {}
    built, failed, pct = audit.success_rate()
    seconds = audit.plugin_seconds()
    sizes = skill_sizes if skill_sizes is not None else audit.skill_sizes()
    per_day = audit.calls_per_day()
    today = today or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lo, hi = TARGET_BYTES
    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        "db": str(audit.path),
        "success": {"built": built, "failed": failed, "pct": pct},
        "runs": audit.runs(),
        "outcomes_per_run": audit.outcomes_per_run(),
        "time_bins": histogram(seconds.values(), TIME_BINS),
        "time_median": statistics.median(seconds.values()) if seconds else None,
        "time_max": max(seconds.values()) if seconds else None,
        "sizes": sizes,
        "size_bins": histogram(sizes.values(), SIZE_BINS),
        "sizes_below": sum(1 for v in sizes.values() if v < lo),
        "sizes_in": sum(1 for v in sizes.values() if lo <= v <= hi),
        "sizes_above": sum(1 for v in sizes.values() if v > hi),
        "calls_per_day": per_day,
        "calls_total": sum(d["calls"] for d in per_day),
        "calls_today": next((d["calls"] for d in per_day if d["day"] == today), 0),
        "tokens_in": sum(d["input_tokens"] for d in per_day),
        "tokens_out": sum(d["output_tokens"] for d in per_day),
        "quota_rpd": quota_rpd,
        "quota_basis": quota_basis,
        "failures": audit.failures(limit=1_000_000),  # every one the DB holds
        "scores": scores,
        "quality_bins": histogram(scores.values(), QUALITY_BINS),
        "routing": routing,
    }


# --- SVG ------------------------------------------------------------------------------------------------

def svg_bars(
    chart_id: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], *,
    hline: tuple[float, str] | None = None, band: tuple[int, int] | None = None, width: int = 720,
    height: int = 220,
) -> str:
    """Stacked bar chart. `series`: (name, colour, values per label). `hline`: (value, label), e.g. the quota.
    `band`: (first, last) bar indexes to shade, e.g. the target size range."""
    pad_l, pad_b, pad_t = 44, 46, 12
    n = max(len(labels), 1)
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    top = max([*totals, hline[0] if hline else 0, 1])
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    slot = plot_w / n
    bar_w = min(slot * 0.7, 56)
    y = lambda v: pad_t + plot_h - plot_h * v / top  # noqa: E731 - local scale
    parts = [f'<svg id="{chart_id}" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    if band:
        x0 = pad_l + slot * band[0]
        parts.append(f'<rect class="band" x="{x0:.1f}" y="{pad_t}" width="{slot * (band[1] - band[0] + 1):.1f}" '
                     f'height="{plot_h}" fill="#e8f5e9"/>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 8}" y2="{pad_t + plot_h}" stroke="#555"/>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" font-size="10">{_num(top)}</text>')
    for i, label in enumerate(labels):
        cursor = pad_t + plot_h  # the top of the segments drawn so far, in pixels
        for name, colour, values in series:
            v = values[i]
            if v:
                h = max(plot_h * v / top, MIN_BAR_PX)  # small values stay visible; the label gives the figure
                cursor -= h
                parts.append(
                    f'<rect data-value="{v:g}" x="{pad_l + slot * i + (slot - bar_w) / 2:.1f}" y="{cursor:.1f}" '
                    f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"><title>{html.escape(label)}: '
                    f'{html.escape(name)} {v:g}</title></rect>')
        cx = pad_l + slot * (i + 0.5)
        parts.append(f'<text x="{cx:.1f}" y="{pad_t + plot_h + 14}" text-anchor="middle" font-size="10">'
                     f'{html.escape(_short(label))}</text>')
        if totals[i]:
            small = [f"{WORDS.get(n, n)} {s[i]:g}" for n, _, s in series if s[i] and s[i] * 20 < totals[i]]
            parts.append(f'<text x="{cx:.1f}" y="{cursor - 3:.1f}" text-anchor="middle" font-size="10">'
                         f'{totals[i]:g}{html.escape(" (" + ", ".join(small) + ")") if small else ""}</text>')
    if hline:
        hy = y(hline[0])
        parts.append(f'<line class="quota" x1="{pad_l}" y1="{hy:.1f}" x2="{width - 8}" y2="{hy:.1f}" '
                     f'stroke="#c62828" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{width - 10}" y="{hy - 4:.1f}" text-anchor="end" font-size="10" fill="#c62828">'
                     f'{html.escape(hline[1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str) -> str:
    """Axis labels: a run id 20261129T101500Z-ab12 shows as 11-29 10:15; anything else as is, cut to fit."""
    m = re.fullmatch(r"\d{4}(\d\d)(\d\d)T(\d\d)(\d\d)\d\dZ-\w+", label)
    return f"{m[1]}-{m[2]} {m[3]}:{m[4]}" if m else label[-12:]


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<p class="legend">' + " ".join(
        f'<span><svg width="10" height="10"><rect width="10" height="10" fill="{c}"/></svg> {html.escape(n)}</span>'
        for n, c in items) + "</p>"


# --- HTML -----------------------------------------------------------------------------------------------

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:960px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
dl.kpi{display:flex;flex-wrap:wrap;gap:12px}dl.kpi div{border:1px solid #ddd;border-radius:6px;padding:8px 12px}
dt{font-size:12px;color:#666}dd{margin:0;font-size:20px;font-weight:600}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right}.legend span{margin-right:12px}.over{color:#c62828;font-weight:600}.muted{color:#777}"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _kpi(el_id: str, label: str, value: Any, shown: str | None = None) -> str:
    return (f'<div><dt>{_e(label)}</dt><dd id="{el_id}" data-value="{_e(value)}">'
            f'{_e(shown if shown is not None else value)}</dd></div>')


def _section_summary(d: dict) -> str:
    s = d["success"]
    pct = s["pct"]
    return "<h2>Summary</h2><dl class=\"kpi\">" + "".join([
        _kpi("success-rate", "success rate", "" if pct is None else pct, "n/a" if pct is None else f"{pct:g}%"),
        _kpi("built", "built (plugin outcomes)", s["built"]),
        _kpi("failed", "failed (plugin outcomes)", s["failed"]),
        _kpi("runs-count", "runs", len(d["runs"])),
        _kpi("calls-total", "API calls (all days)", d["calls_total"]),
        _kpi("calls-today", "API calls today (UTC)", d["calls_today"]),
        _kpi("tokens-in", "input tokens", d["tokens_in"]),
        _kpi("tokens-out", "output tokens", d["tokens_out"]),
    ]) + "</dl>"


def all_runs(d: dict) -> list[tuple[str, dict[str, int], dict]]:
    """[(run id, plugin outcomes, runs row)] oldest first: every run the DB holds, with or without plugin rows."""
    per_run = dict(d["outcomes_per_run"])
    info = {r["id"]: r for r in d["runs"]}
    return [(run, per_run.get(run, {}), info.get(run, {})) for run in sorted(set(per_run) | set(info))]


def _exit_text(info: dict) -> str:
    if not info:
        return "-"
    if info.get("status") == "killed":  # closed by a later run: it never reached its end
        return "killed"
    return "interrupted" if info.get("ended") is None else _e(info.get("exit_status", "-"))


def _section_runs(d: dict) -> str:
    runs = all_runs(d)
    labels = [r for r, _, _ in runs]
    series = [(st, STATUS_COLOURS[st], [c.get(st, 0) for _, c, _ in runs]) for st in STATUSES]
    rows = []
    for run, counts, info in runs:
        summary = info.get("counts") or {}
        attrs = " ".join(f'data-{st}="{counts.get(st, 0)}"' for st in STATUSES)
        cells = "".join(f'<td class="n">{counts.get(st, 0)}</td>' for st in STATUSES)
        cells += "".join(f'<td class="n" data-{k}="{summary.get(k, 0)}">{summary.get(k, 0)}</td>' for k in RUN_ONLY)
        command = " ".join(info.get("arguments") or [])
        rows.append(f'<tr data-run="{_e(run)}" {attrs}><td>{_e(run)}</td>{cells}<td>{_exit_text(info)}</td>'
                    f'<td>{_e(command)}</td></tr>')
    head = "".join(f"<th>{WORDS[st]}</th>" for st in STATUSES) + "".join(f"<th>{k}</th>" for k in RUN_ONLY)
    return ("<h2>Outcomes per run</h2>" + svg_bars("chart-outcomes", labels, series)
            + _legend([(WORDS[st], STATUS_COLOURS[st]) for st in STATUSES])
            + f'<table id="outcomes-per-run"><tr><th>run</th>{head}<th>exit</th><th>command</th></tr>'
            f'{"".join(rows)}</table>')


def _bins_table(table_id: str, bins: list[tuple[str, int]], unit: str) -> str:
    rows = "".join(f'<tr data-bin="{_e(b)}" data-count="{c}"><td>{_e(b)} {unit}</td><td class="n">{c}</td></tr>'
                   for b, c in bins)
    return f'<table id="{table_id}"><tr><th>range</th><th>plugins</th></tr>{rows}</table>'


def _section_time(d: dict) -> str:
    bins = d["time_bins"]
    med, mx = d["time_median"], d["time_max"]
    facts = (f'<p>median <span id="time-median" data-value="{_e("" if med is None else round(med, 2))}">'
             f'{"n/a" if med is None else f"{med:.1f} s"}</span>, slowest <span id="time-max" data-value="'
             f'{_e("" if mx is None else round(mx, 2))}">{"n/a" if mx is None else f"{mx:.1f} s"}</span> '
             f'(analyse + generate + repair, latest run per plugin)</p>')
    return ("<h2>Time per plugin</h2>" + facts
            + svg_bars("chart-time", [b for b, _ in bins], [("plugins", "#6a1b9a", [c for _, c in bins])])
            + _bins_table("time-histogram", bins, "s"))


def _section_sizes(d: dict) -> str:
    bins = d["size_bins"]
    lo, hi = TARGET_BYTES
    first = SIZE_BINS.index(lo)
    last = SIZE_BINS.index(hi) - 1
    facts = (f'<p>target {lo:,}–{hi:,} bytes (shaded): below <span id="sizes-below">{d["sizes_below"]}</span>, '
             f'in target <span id="sizes-in-target">{d["sizes_in"]}</span>, above '
             f'<span id="sizes-above">{d["sizes_above"]}</span></p>')
    return ("<h2>SKILL.md sizes</h2>" + facts
            + svg_bars("chart-sizes", [b for b, _ in bins], [("plugins", "#00838f", [c for _, c in bins])],
                       band=(first, last))
            + _bins_table("size-histogram", bins, "bytes"))


def _section_calls(d: dict) -> str:
    days = d["calls_per_day"]
    quota = d["quota_rpd"]
    labels = [x["day"] for x in days]
    series = [("answered", "#2e7d32", [x["calls"] - x["errors"] for x in days]),
              ("errors", "#c62828", [x["errors"] for x in days])]
    rows = "".join(
        f'<tr data-day="{_e(x["day"])}" data-calls="{x["calls"]}" data-errors="{x["errors"]}" '
        f'data-retried="{x["retried"]}"{" class=over" if quota and x["calls"] > quota else ""}>'
        f'<td>{_e(x["day"])}</td><td class="n">{x["calls"]}</td><td class="n">{x["errors"]}</td>'
        f'<td class="n">{x["retried"]}</td><td class="n">{x["input_tokens"]}</td>'
        f'<td class="n">{x["output_tokens"]}</td></tr>' for x in days)
    basis = f" ({_e(d['quota_basis'])}: the daily budget the throttle allows)" if d.get("quota_basis") else ""
    return (f'<h2>API calls per day</h2><p>quota <span id="quota-rpd" data-value="{quota}">{quota}</span> '
            f'requests per day{basis} (dashed line)</p>'
            + svg_bars("chart-calls", labels, series, hline=(quota, f"quota {quota}") if quota else None)
            + _legend([("answered", "#2e7d32"), ("errors", "#c62828")])
            + f'<table id="calls-per-day"><tr><th>day (UTC)</th><th>calls</th><th>errors</th><th>retried</th>'
            f'<th>tokens in</th><th>tokens out</th></tr>{rows}</table>')


def run_failures(d: dict) -> list[dict]:
    """Runs that failed or never ended without a plugin failure row (a `doit restore` of no plugin, a killed
    run): failures too, shown as rows of phase "run"."""
    with_rows = {f["run_id"] for f in d["failures"]}
    out = []
    for run, _, info in reversed(all_runs(d)):
        if not info or run in with_rows or info.get("exit_status") == 0:
            continue
        ended = info.get("ended") is not None
        out.append({"run_id": run, "plugin_name": "-", "phase": "run",
                    "error_class": f"exit {info.get('exit_status')}" if ended else "interrupted",
                    "error_message": " ".join(info.get("arguments") or [])})
    return out


def _section_failures(d: dict) -> str:
    fails = d["failures"] + run_failures(d)
    if not fails:
        return '<h2>Failures</h2><p id="failures-none">No failures recorded.</p><table id="failures"></table>'
    rows = "".join(
        f'<tr data-plugin="{_e(f["plugin_name"])}" data-phase="{_e(f["phase"])}" data-run="{_e(f["run_id"])}">'
        f'<td>{_e(f["run_id"])}</td><td>{_e(f["plugin_name"])}</td><td>{_e(f["phase"])}</td>'
        f'<td>{_e(f["error_class"])}</td><td>{_e(f["error_message"])}</td></tr>' for f in fails)
    return ('<h2>Failures</h2><p class="muted">plugin failures newest first, then runs that failed with no '
            'plugin failure</p><table id="failures"><tr><th>run</th>'
            f'<th>plugin</th><th>phase</th><th>class</th><th>reason</th></tr>{rows}</table>')


def _section_quality(d: dict) -> str:
    scores = d.get("scores") or {}
    if not scores:
        return '<h2>Quality scores</h2><p id="quality-none">No SKILL.md scored yet.</p>'
    bins = d["quality_bins"]
    values = list(scores.values())
    facts = (f'<p>mean <span id="quality-mean">{sum(values) / len(values):.1f}</span>, minimum '
             f'<span id="quality-min">{min(values)}</span> of <span id="quality-count">{len(values)}</span> files '
             '(rubric: docs/quality.md; <code>doit lint</code> lists what cost points)</p>')
    return ("<h2>Quality scores</h2>" + facts
            + svg_bars("chart-quality", [b for b, _ in bins], [("files", "#ef6c00", [c for _, c in bins])])
            + _bins_table("quality-histogram", bins, "points"))


def _section_routing(d: dict) -> str:
    found = d.get("routing")
    if not found:
        return '<h2>Trigger routing</h2><p id="routing-none">Run <code>doit routing</code> to measure it.</p>'
    lines = [found.get("summary"), found.get("evals_summary")]
    facts = "".join(f'<p class="routing-summary">{_e(x)}</p>' for x in lines if x)
    rows = "".join(f'<tr data-a="{_e(a)}" data-b="{_e(b)}" data-phrases="{n}"><td>{_e(a)}</td><td>{_e(b)}</td>'
                   f'<td class="n">{n}</td></tr>' for a, b, n in found.get("confusable", []))
    return ("<h2>Trigger routing</h2>" + facts + '<p class="muted">most confusable pairs: trigger phrases of one '
            'plugin that pick the other</p><table id="confusable"><tr><th>plugin</th><th>confused with</th>'
            f"<th>phrases</th></tr>{rows}</table>")


def render_html(d: dict) -> str:
    body = "".join([_section_summary(d), _section_runs(d), _section_time(d), _section_sizes(d),
                    _section_quality(d), _section_routing(d), _section_calls(d), _section_failures(d)])
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>skillbuild report</title>'
            f'<style>{CSS}</style></head><body><h1>skillbuild report</h1>'
            f'<p class="muted">generated <span id="generated">{_e(d["generated"])}</span> from {_e(d["db"])}</p>'
            f"{body}</body></html>\n")


def write_html(audit_db: AuditDB | str | os.PathLike, out_path: str | os.PathLike, quota_rpd: int,
               skill_sizes: dict[str, int] | None = None, quota_basis: str | None = None,
               scores: dict[str, int] | None = None, routing: dict | None = None) -> Path:
    """Write the report page (atomically: a reader never sees half a page) and return its path."""
    audit = audit_db if isinstance(audit_db, AuditDB) else AuditDB(audit_db)
    return atomic_write(out_path, render_html(report_data(audit, quota_rpd, skill_sizes, quota_basis=quota_basis,
                                                          scores=scores, routing=routing)))


def copy_latest(page: str | os.PathLike, latest: str | os.PathLike) -> Path:
    """Copy a marketplace's report to the shared `build/report.html` (atomically), the page to open first."""
    return atomic_copy(page, latest)
