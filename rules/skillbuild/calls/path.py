"""The call path: response cache lookup -> throttle -> send -> retry with backoff -> attempt records -> cache store.

A `Caller` wraps one provider. A local provider (offline) answers itself and the caller only hands its
answer on. For a remote provider every request goes through here, whichever phase sends it:

  - the cache key is computed from the `Request` the provider builds (so `doit plan` knows a hit without
    sending anything); a valid cached answer is returned with no attempt at all;
  - each HTTP attempt first sets up the client (a setup error is no attempt), then waits for the throttle,
    is recorded as one attempt dict in `Usage.attempts` (the audit's `api_calls` rows), and reports its
    status, RetryInfo delay and tokens back to the throttle;
  - tenacity retries 408/429/5xx, timeouts and connection errors with exponential backoff and jitter, never
    sooner than the server's RetryInfo delay, bounded in attempts and seconds; other errors end the call at
    once with the provider's message saying what to fix;
  - an answer stopped at MAX_TOKENS gets one retry with twice the budget; a refused or empty answer fails;
  - an analysis must be JSON valid against the analysis schema: one more call if it is not.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Protocol

from skillbuild.calls.response_cache import ResponseCache
from skillbuild.providers.base import (Failure, PluginContext, Provider, ProviderError, Reply, Request, Result,
                                       Usage)
from skillbuild.skill.schema import best_error

if TYPE_CHECKING:
    import tenacity

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NETWORK_KINDS = frozenset({"timeout", "connection"})


class Pacer(Protocol):
    """What the calls path needs of a throttle (skillbuild/calls/throttle.py's `Throttle`)."""

    def acquire(self, est_tokens: int = 0) -> None: ...

    def mark_sent(self) -> None: ...

    def record(self, status: int | None, retry_after: float | None = None, tokens: int = 0) -> None: ...

    def plugin_done(self) -> None: ...


class NoThrottle:
    """No pacing: every attempt may go at once (a plan, a benchmark, a test)."""

    def acquire(self, est_tokens: int = 0) -> None:
        return None

    def mark_sent(self) -> None:
        return None

    def record(self, status: int | None, retry_after: float | None = None, tokens: int = 0) -> None:
        return None

    def plugin_done(self) -> None:
        return None


class Retry:
    """How long one request may keep trying."""

    def __init__(self, max_attempts: int = 5, max_seconds: float = 600.0, backoff_initial: float = 1.0,
                 backoff_max: float = 60.0):
        self.max_attempts, self.max_seconds = max_attempts, max_seconds
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max

    def wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with jitter, never shorter than the server's RetryInfo delay."""
        import tenacity

        base = tenacity.wait_exponential_jitter(initial=self.backoff_initial, max=self.backoff_max,
                                                jitter=self.backoff_initial)(state)
        exc = state.outcome.exception() if state.outcome else None
        delay = exc.failure.retry_after if isinstance(exc, AttemptFailed) else None
        return max(base, delay or 0.0)


class AttemptFailed(Exception):
    """One attempt failed; tenacity judges `failure` to retry or not."""

    def __init__(self, failure: Failure):
        super().__init__(failure.error)
        self.failure = failure


def transient(exc: BaseException) -> bool:
    """Worth another attempt: a 408/429/5xx status, a timeout or a lost connection."""
    if not isinstance(exc, AttemptFailed):
        return False
    failure = exc.failure
    return failure.kind in NETWORK_KINDS or (failure.kind == "http" and failure.status in RETRY_STATUSES)


def cache_key(request: Request) -> str:
    """The response cache key of a request: sha256 of (model, prompt, message, generation settings)."""
    return ResponseCache.key(request.model, request.prompt, request.message, request.settings)


class Caller:
    """Every analysis, generation and repair call of one provider, through one path."""

    def __init__(self, provider: Provider, *, cache: ResponseCache | None = None, throttle: Pacer | None = None,
                 retry: Retry | None = None):
        self.provider = provider
        self.cache = cache if provider.has_cache_key else None
        self.throttle = throttle or NoThrottle()
        self.retry = retry or Retry()

    def __repr__(self) -> str:
        return f"Caller({self.provider!r})"

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def can_repair(self) -> bool:
        return self.provider.can_repair

    def plugin_done(self) -> None:
        """One plugin is finished: the throttle may rest (the seed presets rest every N plugins)."""
        self.throttle.plugin_done()

    # -- the phases
    def analyse(self, plugin: PluginContext, prompt: str) -> Result:
        """Phase 1: an analysis valid against the schema; an invalid answer gets one more call."""
        if not self.provider.is_remote:
            return self.provider.analyse(plugin, prompt)
        request = self.analysis_request(plugin, prompt)
        cached = self._cached(request, _valid_analysis)
        if cached:
            return cached
        usage = Usage()
        for attempt in (1, 2):
            value, problem = _parse_analysis(self._complete(request, usage))
            if problem is None:
                self._store(request, value, usage)
                return Result(value, self.model, usage)
            if attempt == 1:
                _mark_retried(usage, f"invalid JSON: {problem}")
        raise ProviderError(f"{plugin.name}: the model's analysis is not valid JSON for the analysis schema "
                            f"after 2 tries ({problem}); rerun later or try another model", "invalid_json", usage)

    def generate(self, plugin: PluginContext, analysis: dict, prompt: str,
                 feedback: list[str] | None = None) -> Result:
        """Phase 2: SKILL.md text; `feedback` (the gate reasons) makes it a repair call."""
        if not self.provider.is_remote:
            return self.provider.generate(plugin, analysis, prompt, feedback)
        request = self.generation_request(plugin, analysis, prompt, feedback)
        cached = self._cached(request, _valid_generation)
        if cached:
            return cached
        usage = Usage()
        text = self._complete(request, usage).strip() + "\n"
        self._store(request, text, usage)
        return Result(text, self.model, usage)

    # -- what `doit plan` reads: the exact requests and whether their answers are cached
    def analysis_request(self, plugin: PluginContext, prompt: str) -> Request:
        return self.provider.analysis_request(plugin, prompt)

    def generation_request(self, plugin: PluginContext, analysis: dict, prompt: str,
                           feedback: list[str] | None = None) -> Request:
        return self.provider.generation_request(plugin, analysis, prompt, feedback)

    def cached_analysis(self, plugin: PluginContext, prompt: str) -> Result | None:
        """The cached answer `analyse` would return without a call, or None (always, without a cache)."""
        if self.cache is None:
            return None
        return self._cached(self.analysis_request(plugin, prompt), _valid_analysis)

    def cached_generation(self, plugin: PluginContext, analysis: dict, prompt: str,
                          feedback: list[str] | None = None) -> Result | None:
        """The cached answer `generate` would return without a call, or None (always, without a cache)."""
        if self.cache is None:
            return None
        return self._cached(self.generation_request(plugin, analysis, prompt, feedback), _valid_generation)

    def store_answer(self, request: Request, value: Any, usage: Usage) -> None:
        """Keep an answer that came another way (a batch job) exactly as `_store` keeps a sent one."""
        self._store(request, value, usage)

    # -- the cache
    def _cached(self, request: Request, valid: Callable[[Any], bool]) -> Result | None:
        if self.cache is None:
            return None
        entry = self.cache.get(cache_key(request))
        if entry is None or not valid(entry.get("value")):
            return None
        return Result(entry["value"], entry.get("model", self.model), Usage(cached=1))

    def _store(self, request: Request, value: Any, usage: Usage) -> None:
        if self.cache is not None:
            self.cache.put(cache_key(request), {"value": value, "model": self.model, "input_tokens": usage.input_tokens,
                                                "output_tokens": usage.output_tokens, "created": _now()})

    # -- one logical call
    def _complete(self, request: Request, usage: Usage) -> str:
        """The answer's text: transient failures retried, one larger-budget retry on MAX_TOKENS."""
        reply = _usable(self.send(request, usage), usage)
        if reply.truncated:
            budget = min(self.provider.max_output_ceiling, 2 * request.max_tokens)
            _mark_retried(usage, f"MAX_TOKENS at {request.max_tokens} tokens; retrying with {budget}")
            reply = _usable(self.send(self.provider.with_max_tokens(request, budget), usage), usage)
            if reply.truncated:
                raise ProviderError(f"the model stopped at the output limit ({budget} tokens) twice; shorten the "
                                    "inputs (input_total_budget) or use a model with a larger output limit",
                                    "max_tokens", usage)
        return reply.text

    def send(self, request: Request, usage: Usage) -> Reply:
        """One request through tenacity; every attempt passes the throttle and is recorded in `usage`."""
        import tenacity  # deferred: loading doit's tasks imports this module and must stay fast

        started = time.monotonic()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts)
            | tenacity.stop_before_delay(self.retry.max_seconds),
            wait=self.retry.wait, retry=tenacity.retry_if_exception(transient), reraise=True,
            before_sleep=lambda state: _mark_retried(usage))
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(request, usage)
        except AttemptFailed as exc:
            kind, message = self.provider.explain(exc.failure, usage.calls, time.monotonic() - started)
            raise ProviderError(message, kind, usage) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _attempt(self, request: Request, usage: Usage) -> Reply:
        self.provider.connect()  # a setup error is no attempt: raise it before the throttle
        self.throttle.acquire((len(request.prompt) + len(request.message)) // 4)  # may raise: not ours to retry
        begun = time.monotonic()
        record = {"time": _now(), "status": None, "latency_s": 0.0, "input_tokens": 0, "output_tokens": 0,
                  "retried": False, "error": None}
        usage.attempts.append(record)
        usage.calls += 1
        try:
            reply = self.provider.send(request, on_sent=self.throttle.mark_sent)
        except Exception as exc:
            failure = self.provider.failure(exc)
            record.update(latency_s=round(time.monotonic() - begun, 3), status=failure.status, error=failure.error)
            self.throttle.record(failure.status, failure.retry_after, 0)
            raise AttemptFailed(failure) from None
        record.update(latency_s=round(time.monotonic() - begun, 3), status=200, input_tokens=reply.input_tokens,
                      output_tokens=reply.output_tokens)
        usage.input_tokens += reply.input_tokens
        usage.output_tokens += reply.output_tokens
        self.throttle.record(200, None, reply.input_tokens + reply.output_tokens)
        return reply


def _usable(reply: Reply, usage: Usage) -> Reply:
    """The reply, unless it has no candidate, was refused, or is empty without being cut short."""
    if reply.finish is None:
        raise ProviderError("the model returned no candidates" + (f" (prompt blocked: {reply.blocked})"
                            if reply.blocked else "") + "; check the plugin inputs or rerun later", "empty", usage)
    if reply.refused:
        raise ProviderError(f"the model refused the request (finishReason {reply.finish}); review the plugin "
                            "inputs for content that trips safety filters", "safety", usage)
    if not reply.text.strip() and not reply.truncated:
        raise ProviderError(f"the model returned an empty answer (finishReason {reply.finish})", "empty", usage)
    return reply


def _parse_analysis(text: str) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    problem = best_error(value)
    return (value, None) if problem is None else (None, problem)


def _valid_analysis(value: Any) -> bool:
    return isinstance(value, dict) and not best_error(value)


def _valid_generation(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _mark_retried(usage: Usage, error: str | None = None) -> None:
    if usage.attempts:
        usage.attempts[-1]["retried"] = True
        if error and not usage.attempts[-1]["error"]:
            usage.attempts[-1]["error"] = error


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
