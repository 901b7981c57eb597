"""`doit batch`: stale plugins' requests as Vertex AI batch jobs whose answers fill the response cache.

Each phase (analysis, then generation, whose prompt needs the analyses) becomes one job of the exact requests
the online path would send, so the cache keys are identical and the ordinary `doit` afterwards finds every
answer there. An answer is mapped back to its cache key through the request Vertex echoes in each output
line: by the sha256 of its user text, which alone tells the rows of one job apart (model, system
instruction and generation config are the same for all of them), so a re-serialised config cannot break the
mapping and no field outside the generateContent body is needed.

Safety: the intent row (`batch_jobs`, state `submitting`) is written before the job is created; a run that
finds one without a job name adopts the job with its display name; a row not yet collected is resumed, never
submitted again, and a request set already sent once is not sent again (its failed rows are the online path's).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from skillbuild.calls.path import _parse_analysis, _usable, cache_key
from skillbuild.providers.base import ProviderError, Request, Usage

PHASES = ("analyse", "generate")
DONE_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED")


@dataclass(frozen=True)
class Row:
    """One request of a job and what its answer is checked against."""

    plugin: Any  # discovery.Plugin
    request: Request
    key: str  # the response cache key
    original: str | None = None  # the hand-written SKILL.md (generation gates)


def text_digest(body: dict) -> str:
    """sha256 of the user text of a generateContent body: a row's identity within its job."""
    return _digest("".join(p.get("text", "") for c in body.get("contents") or [] for p in c.get("parts") or []))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def set_hash(rows: list[Row]) -> str:
    return hashlib.sha256("\n".join(sorted(r.key for r in rows)).encode()).hexdigest()[:16]


def jsonl(rows: list[Row], body_of: Callable[[Request], dict]) -> bytes:
    """One `{"request": {...}}` line per row, in cache-key order: the same requests give the same bytes."""
    lines = [json.dumps({"request": body_of(r.request)}, sort_keys=True, ensure_ascii=False)
             for r in sorted(rows, key=lambda r: r.key)]
    return ("\n".join(lines) + "\n").encode("utf-8")


# ----------------------------------------------------------------------------- what is pending


def stale_plugins(settings, market) -> list:
    """The plugins `doit` would build now: `status.judge` says stale."""
    from skillbuild import build
    from skillbuild.ui import status

    expected = build.expected_provenance(settings)
    return [p for p in market.buildable() if status.judge(settings, p, expected)[0] == "stale"]


def pending(settings, plugins: list, caller, phase: str) -> list[Row]:
    """Rows of `phase` whose answer is not in the response cache (generation: only plugins whose analysis is)."""
    from skillbuild import build

    prompt = build.read_prompt(settings, "analysis" if phase == "analyse" else "generation")
    analysis_prompt = build.read_prompt(settings, "analysis")
    rows = []
    for plugin in plugins:
        if phase == "analyse":
            context, _ = build.prepared_context(settings, plugin)
            if caller.cached_analysis(context, prompt) is None:
                request = caller.analysis_request(context, prompt)
                rows.append(Row(plugin, request, cache_key(request)))
            continue
        original = build.original_text(settings, plugin)
        context, _ = build.prepared_context(settings, plugin, original)
        analysed = caller.cached_analysis(context, analysis_prompt)
        if analysed is None or caller.cached_generation(context, analysed.value, prompt) is not None:
            continue
        request = caller.generation_request(context, analysed.value, prompt)
        rows.append(Row(plugin, request, cache_key(request), original))
    return rows


# ----------------------------------------------------------------------------- checking answers


def check_line(settings, caller, row: Row, line: dict) -> tuple[Any, str | None, Usage]:
    """(value to cache or None, problem or None, tokens) of one output line, judged as the online path judges
    an answer. A generation that fails the gates is cached all the same (as online), so `doit` makes only the
    repair call for it; its problem is recorded."""
    usage = Usage()
    if "response" not in line:
        return None, f"batch row failed: {str(line.get('status') or 'no response')[:300]}", usage
    from skillbuild.providers.vertex_batch import reply_of

    reply = reply_of(line["response"])
    usage.input_tokens, usage.output_tokens = reply.input_tokens, reply.output_tokens
    try:
        _usable(reply, usage)
    except ProviderError as exc:
        return None, str(exc), usage
    if reply.truncated:  # the online path retries with a larger budget: leave it to it
        return None, f"MAX_TOKENS at {row.request.max_tokens} tokens", usage
    if _is_analysis(row):
        value, problem = _parse_analysis(reply.text)
        return value, (f"invalid JSON: {problem}" if problem else None), usage
    text = reply.text.strip() + "\n"
    return text, _gate_problem(settings, caller, row, text), usage


def _is_analysis(row: Row) -> bool:
    return (row.request.settings or {}).get("response_mime_type") == "application/json"


def _gate_problem(settings, caller, row: Row, text: str) -> str | None:
    from skillbuild import build
    from skillbuild.skill import skillmd

    carried = skillmd.carried_keys(row.original) if row.original else {}
    skill, files = caller.provider.parse_generation(text)  # the SKILL.md and its reference files, as online
    reasons = build.gate(settings, row.plugin, caller.name, skillmd.carry_over(skill, carried), row.original,
                         files)
    return f"gate: {'; '.join(reasons)}" if reasons else None


# ----------------------------------------------------------------------------- the job's life


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class BatchRun:
    """One `doit batch`: resume open jobs, then one job per phase with pending requests."""

    def __init__(self, settings, market, run_id: str, say: Callable[[str], None] = print):
        from skillbuild import build
        from skillbuild.calls import caller_for
        from skillbuild.providers.vertex_batch import bucket_name, service_for

        self.settings, self.market, self.run_id, self.say = settings, market, run_id, say
        self.caller = caller_for(settings, paced=False)
        self.service = service_for(self.caller.provider)
        self.bucket = bucket_name(settings.batch_bucket or "")
        self.audit = build.open_audit(settings)
        self.plugins = stale_plugins(settings, market)
        self.counts = {"jobs": 0, "rows": 0, "cached": 0, "failed": 0}

    def open_jobs(self) -> list[dict]:
        """Jobs not yet collected: still running, or finished while no run was watching."""
        return [r for r in self.audit.batch_jobs() if r["succeeded"] is None]

    def cancel(self) -> int:
        jobs = [r for r in self.open_jobs() if r["job_name"]]
        for job in jobs:
            self.service.cancel(job["job_name"])
            self.audit.batch_job_update(job["id"], state="JOB_STATE_CANCELLED", succeeded=0, failed=0)
            self.say(f"batch: cancelled {job['job_name']} ({job['phase']}, {job['request_count']} requests)")
        return len(jobs)

    def run(self) -> dict:
        for job in self.open_jobs():
            self.say(f"batch: resuming {job['phase']} job {job['job_name'] or job['display_name']}")
            self.finish(job)
        for phase in PHASES:
            rows = pending(self.settings, self.plugins, self.caller, phase)
            if not rows:
                self.say(f"batch {phase}: nothing to send (every answer is cached)")
                continue
            digest = set_hash(rows)
            if any(r["phase"] == phase and r["request_hash"] == digest for r in self.audit.batch_jobs()):
                self.say(f"batch {phase}: these {len(rows)} request(s) were sent once already; their failed rows "
                         "are left to `doit`")
                continue
            self.finish(self.submit(phase, rows, digest))
        return self.counts

    def submit(self, phase: str, rows: list[Row], digest: str) -> dict:
        from skillbuild.providers.vertex_batch import request_body

        base = f"gs://{self.bucket}/{self.settings.marketplace_id}/{phase}-{digest}"
        data = jsonl(rows, lambda req: request_body(self.caller.provider, req))
        wrote = self.service.upload(base + ".jsonl", data)
        self.say(f"batch {phase}: {len(rows)} request(s) {'uploaded to' if wrote else 'already at'} {base}.jsonl")
        row_id = self.audit.batch_job_open(phase, digest, len(rows), base + ".jsonl", base + "/",
                                           f"skillbuild-{phase}-{digest}", self.run_id)
        return next(r for r in self.audit.batch_jobs() if r["id"] == row_id)

    def finish(self, job: dict) -> None:
        name = job["job_name"] or self._create_or_adopt(job)
        status = self.poll(job, name)
        self.collect(job, status)

    def _create_or_adopt(self, job: dict) -> str:
        found = self.service.find(job["display_name"])
        name = found.name if found is not None else \
            self.service.create(job["input_uri"], job["output_uri"], job["display_name"])
        # recorded before it is said: what the log says exists, the audit DB knows (a kill in between adopts)
        self.audit.batch_job_update(job["id"], job_name=name, state="JOB_STATE_PENDING")
        self.say(f"batch {job['phase']}: adopted {name} ({job['display_name']})" if found is not None
                 else f"batch {job['phase']}: created {name}")
        self.counts["jobs"] += 1
        return name

    def poll(self, job: dict, name: str):
        """Poll with backoff (batch_poll_seconds, growing to 10x) until the job ends; progress and ETA printed."""
        wait, started, last = self.settings.batch_poll_seconds, time.monotonic(), None
        while True:
            status = self._get(name)
            if status is None:  # a transient error: poll again after the wait
                time.sleep(wait)
                wait = min(wait * 1.5, self.settings.batch_poll_seconds * 10)
                continue
            if status.state != last:
                self.audit.batch_job_update(job["id"], state=status.state)
                last = status.state
            done = status.succeeded + status.failed
            self.say(f"batch {job['phase']}: {status.state.removeprefix('JOB_STATE_')} {done}/{job['request_count']}"
                     f" done{_eta(done, job['request_count'], time.monotonic() - started)}")
            if status.final:
                return status
            time.sleep(wait)
            wait = min(wait * 1.5, self.settings.batch_poll_seconds * 10)

    def _get(self, name: str):
        """One poll; None after a transient failure (408/429/5xx, timeout, lost connection), which is said and
        retried; any other failure ends the run with the provider's message."""
        from skillbuild.calls.path import AttemptFailed, transient

        provider = self.caller.provider
        try:
            return self.service.get(name)
        except ProviderError:
            raise
        except Exception as exc:  # the SDK's and the HTTP stack's errors, classified by the provider
            failure = provider.failure(exc)
            if transient(AttemptFailed(failure)):
                self.say(f"batch: polling {name} failed ({failure.error}); polling again")
                return None
            raise ProviderError(provider.explain(failure, 1, 0.0)[1], failure.kind) from None

    def collect(self, job: dict, status) -> None:
        """Check each output line, cache the good answers, record every row in api_calls as a batch call."""
        rows = {_digest(r.request.message): r for r in pending(self.settings, self.plugins, self.caller, job["phase"])}
        lines = [json.loads(line) for _, text in self.service.read_prefix(job["output_uri"])
                 for line in text.splitlines() if line.strip()]
        ok = failed = 0
        for line in lines:
            row = rows.get(text_digest(line.get("request") or {}))
            if row is None:
                continue  # an answer to a request no longer pending (inputs changed, or cached meanwhile)
            value, problem, usage = check_line(self.settings, self.caller, row, line)
            if value is not None:
                self.caller.store_answer(row.request, value, usage)
                self.counts["cached"] += 1
            ok += problem is None
            failed += problem is not None
            self._record(job["phase"], row, line, problem, usage)
        self.counts["rows"] += len(lines)
        self.counts["failed"] += failed + max(0, job["request_count"] - len(lines))
        self.audit.batch_job_update(job["id"], state=status.state, succeeded=ok, failed=job["request_count"] - ok)
        why = f" ({status.error})" if status.error else ""
        self.say(f"batch {job['phase']}: {status.state.removeprefix('JOB_STATE_')}{why}; {ok} answer(s) cached, "
                 f"{job['request_count'] - ok} left to `doit`")

    def _record(self, phase: str, row: Row, line: dict, problem: str | None, usage: Usage) -> None:
        s = self.settings
        cost = (usage.input_tokens * s.price_batch_input_per_mtok
                + usage.output_tokens * s.price_batch_output_per_mtok) / 1e6
        attempt = {"time": _now(), "status": 200 if "response" in line else None, "latency_s": None,
                   "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "retried": False,
                   "error": problem, "mode": "batch", "cost_usd": round(cost, 8)}
        self.audit.record_api_calls(self.run_id, row.plugin.key, phase, [attempt])


def _eta(done: int, total: int, seconds: float) -> str:
    if not done or done >= total:
        return ""
    from skillbuild.planning import duration

    return f", ETA {duration(seconds / done * (total - done))}"


# ----------------------------------------------------------------------------- doit actions


def run_batch(settings, market, run_id: str, cancel: bool = False):
    """`doit batch [cancel=1]`: a TaskFailed naming the fix, or None."""
    from doit.exceptions import TaskFailed

    if settings.provider != "vertex":
        return TaskFailed(f"batch: needs provider=vertex (the {settings.provider} provider sends no batch jobs)")
    if not settings.batch_bucket:
        return TaskFailed("batch: set batch_bucket (SKILLBUILD_BATCH_BUCKET) to a Cloud Storage bucket, "
                          "gs://NAME or NAME; see the README's batch section for its roles")
    refusal = None if cancel else _over_cap(settings, market)
    if refusal:
        return TaskFailed(f"batch: {refusal}")
    try:
        batch = BatchRun(settings, market, run_id, say=lambda text: print(text, flush=True))
        if cancel:
            print(f"batch: {batch.cancel()} job(s) cancelled", flush=True)
            return None
        counts = batch.run()
    except ProviderError as exc:
        return TaskFailed(f"batch: {exc}")
    except Exception as exc:  # Cloud Storage or the SDK refusing (bucket missing, no permission): say which
        if not type(exc).__module__.startswith(("google", "httpx", "requests")):
            raise
        return TaskFailed(f"batch: {type(exc).__name__}: {str(exc)[:500]}; check batch_bucket, the bucket's "
                          "roles and the project (README: Batch prediction)")
    print(f"batch: {counts['jobs']} job(s) created, {counts['rows']} row(s) read, {counts['cached']} answer(s) "
          f"cached, {counts['failed']} left to `doit`", flush=True)
    return None


def batch_cost(settings, plan) -> float:
    return (plan.input_tokens * settings.price_batch_input_per_mtok
            + plan.output_tokens * settings.price_batch_output_per_mtok) / 1e6


def _over_cap(settings, market) -> str | None:
    """The batch's estimate (the plan's tokens at the batch price) against max_cost_usd."""
    if settings.max_cost_usd is None:
        return None
    from skillbuild import build, planning
    from skillbuild.calls.spend import over_estimate

    plan = planning.make_plan(settings, market, build.expected_provenance(settings), settings.model_id)
    return over_estimate(settings, batch_cost(settings, plan), "batch")


def format_batch_plan(settings, plan) -> str:
    """`doit plan mode=batch`: jobs, requests, cost at the batch price next to the online cost, turnaround."""
    from skillbuild.planning import _money, duration

    analyses = sum(p.analysis_call for p in plan.plugins)
    generations = sum(p.generation_call for p in plan.plugins)
    jobs = int(analyses > 0) + int(generations > 0)
    cost = batch_cost(settings, plan)
    lines = [f"batch plan (`doit batch`): nothing is sent, nothing is written",
             f"jobs: {jobs} (analysis: {analyses} request(s), generation: {generations} request(s)) for "
             f"{len(plan.plugins)} stale plugin(s)",
             f"cost (estimate): batch {_money(cost)} at ${settings.price_batch_input_per_mtok:g} in / "
             f"${settings.price_batch_output_per_mtok:g} out per million tokens; online {_money(plan.cost)}",
             "turnaround: typically within a few hours, at most 24 h per job (two jobs: analysis, then "
             "generation); no per-minute quota"]
    online = plan.eta()
    if online:
        lines.append(f"online instead: {duration(online)} at the configured pace")
    if settings.max_cost_usd is not None:
        from skillbuild.calls.spend import plan_line

        lines.append(plan_line(settings, cost).replace("the run would", "the batch would"))
    if len(plan.plugins) < settings.batch_min_plugins:
        lines.append(f"batch is not worth it: {len(plan.plugins)} stale plugin(s) is below batch_min_plugins "
                     f"({settings.batch_min_plugins}); run `doit` online")
    return "\n".join(lines)
