"""The one path of every remote call: response cache, quota throttle, retries and attempt records.

`caller_for(settings)` is how the build, `doit plan`, `doit check` and the benchmarks reach a provider;
`throttle_for(settings)` is the one place the shared throttle is made from the settings.
"""
from __future__ import annotations

import threading
from typing import Any

from skillbuild.calls.path import Caller, NoThrottle, Retry, cache_key
from skillbuild.providers.base import ProviderError, Usage

_THROTTLES: dict[tuple, Any] = {}
_THROTTLES_LOCK = threading.Lock()  # worker threads of one process share one throttle object


def throttle_for(settings):
    """The shared throttle at build/throttle.sqlite3, one object per process and configuration (its state is
    shared through the DB file). A bad pacing setting raises ValueError naming it before the DB is touched."""
    from skillbuild.calls.throttle import limits_from_settings, throttle_from_settings

    key = (str(settings.throttle_db), limits_from_settings(settings), bool(settings.wait_for_reset))
    with _THROTTLES_LOCK:
        if key not in _THROTTLES:
            _THROTTLES[key] = throttle_from_settings(settings)
        return _THROTTLES[key]


def retry_for(settings) -> Retry:
    return Retry(max_attempts=settings.max_attempts, max_seconds=settings.retry_max_seconds,
                 backoff_initial=settings.retry_backoff_seconds)


def caller_for(settings, *, paced: bool = True, cached: bool = True) -> Caller:
    """The configured provider behind the call path. `paced=False` for callers that send nothing (a plan) or
    must not wait (a benchmark); `cached=False` for calls that must reach the service."""
    from skillbuild.calls.response_cache import ResponseCache
    from skillbuild.providers import make_provider

    provider = make_provider(settings)
    if not provider.is_remote:
        return Caller(provider)
    cache = ResponseCache(settings.responses_dir, spill=settings.spilled_responses_dir) if cached else None
    return Caller(provider, cache=cache,
                  throttle=throttle_for(settings) if paced else None, retry=retry_for(settings))


def preflight(settings, *, paced: bool = True) -> tuple[bool, str]:
    """One cheap call (through the throttle unless `paced=False`) that proves credentials, project, location
    and model: (ok, what to fix or what worked). It never reads the cache: it must reach the service."""
    caller = caller_for(settings, paced=paced, cached=False)
    caller.retry.max_attempts = min(caller.retry.max_attempts, 2)
    provider = caller.provider
    where = provider.describe()
    try:
        caller.send(provider.ping_request(), Usage())
    except ProviderError as exc:
        return False, f"{provider.service} preflight failed for {where}: {exc}"
    via = f" via {provider.endpoint}" if provider.endpoint else ""
    return True, f"{provider.service} reachable{via}: {where} answered"


__all__ = ["Caller", "NoThrottle", "Retry", "cache_key", "caller_for", "preflight", "retry_for", "throttle_for"]
