"""Gemini on Vertex AI through the google-genai SDK: analysis (JSON mode) and SKILL.md generation.

Credentials: Application Default Credentials, unless an endpoint override is configured
(`vertex_endpoint` / SKILLBUILD_VERTEX_ENDPOINT): then, and only then, a static bearer token
(`vertex_token`) is used, which is how tests and benchmarks reach skillbuild/testing/fakevertex.py.

Every call goes: response cache -> (throttle.acquire -> one HTTP attempt -> throttle.record) x retries.
The SDK's own retries stay off so that each attempt passes the throttle; tenacity retries 408/429/5xx,
timeouts and connection errors with exponential backoff and jitter, bounded in attempts and seconds.

Prompt contract (skillbuild/testing/fakevertex.py reads the same): the prompt file is the system instruction; the
user message is a short task line followed by fenced JSON blocks, each opened by "```json <tag>" and
closed by a line "```" (single-line JSON, so it cannot close early):
  - `skillbuild-plugin`:   dataclasses.asdict(PluginContext), always;
  - `skillbuild-analysis`: the phase-1 analysis (generation only);
  - `skillbuild-feedback`: the list of gate failure reasons (repair calls only).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import tenacity

from skillbuild.providers.base import PluginContext, ProviderError, Result, Usage
from skillbuild.calls.response_cache import ResponseCache
from skillbuild.skill.schema import analysis_schema, best_error

PLUGIN_TAG = "skillbuild-plugin"
ANALYSIS_TAG = "skillbuild-analysis"
FEEDBACK_TAG = "skillbuild-feedback"
DEFAULT_MODEL = "gemini-2.5-flash"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SAFETY_REASONS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"})
ANALYSIS_MAX_TOKENS = 8192
GENERATION_MAX_TOKENS = 16384
MAX_TOKENS_CEILING = 65536  # Gemini 2.5 Flash output limit
# JSON Schema keywords the Vertex response-schema dialect (OpenAPI subset) understands.
SCHEMA_KEYWORDS = {"type", "description", "properties", "required", "items", "enum", "minLength", "maxLength",
                   "minimum", "maximum", "minItems", "maxItems", "nullable", "format"}


_CLIENTS: dict[tuple, Any] = {}  # SDK clients shared by the providers of one process (see _client_or_create)


class NoThrottle:
    """The default: every attempt may go at once."""

    def acquire(self, est_tokens: int = 0) -> None:
        return None

    def record(self, status: int | None, retry_after: float | None = None, tokens: int = 0) -> None:
        return None

    def mark_sent(self) -> None:
        return None


_SENDING = threading.local()  # the throttle of the call this thread is sending (read by _on_request)


def _on_request(request: Any) -> None:
    """httpx request hook: runs as the request leaves, so the throttle records the real send time."""
    mark_sent = getattr(getattr(_SENDING, "throttle", None), "mark_sent", None)
    if mark_sent is not None:  # a throttle without it (a test double) keeps its acquire time
        mark_sent()


# ----------------------------------------------------------------------------- prompt building


def block(tag: str, value: Any) -> str:
    """A fenced single-line JSON block; sorted keys keep the cache key stable."""
    return f"```json {tag}\n{json.dumps(value, ensure_ascii=False, sort_keys=True)}\n```\n"


def plugin_data(plugin: PluginContext) -> dict:
    return dataclasses.asdict(plugin)


def analysis_message(plugin: PluginContext) -> str:
    return ("Analyse the plugin below. Its data is the JSON block: the manifest, its text files in priority "
            "order (`files`), bundled script names, the slash commands and agents it defines, and any inputs "
            "cut by the byte budget (`cut`).\n\n" + block(PLUGIN_TAG, plugin_data(plugin)))


def generation_message(plugin: PluginContext, analysis: dict, feedback: list[str] | None) -> str:
    commands = ", ".join(f"/{c}" for c in plugin.commands) or "none"
    agents = ", ".join(plugin.agents) or "none"
    text = (f'Write the SKILL.md for the plugin below. The skill name is "{plugin.skill_name}". '
            f"The only slash commands that exist: {commands}. The only agents that exist: {agents}.\n\n"
            + block(ANALYSIS_TAG, analysis) + "\n" + block(PLUGIN_TAG, plugin_data(plugin)))
    if feedback:
        reasons = "\n".join(f"- {r}" for r in feedback)
        text += ("\nRepair: your previous SKILL.md for this plugin was rejected by the validator for these "
                 f"reasons:\n{reasons}\nWrite the complete corrected file, fixing every problem listed, and "
                 "keep everything else that was right.\n\n" + block(FEEDBACK_TAG, list(feedback)))
    return text


def vertex_schema(schema: dict) -> dict:
    """The analysis JSON Schema in Vertex's response-schema dialect: $refs inlined, unknown keywords dropped."""
    defs = schema.get("$defs", {})

    def convert(node: dict) -> dict:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        out = {k: v for k, v in node.items() if k in SCHEMA_KEYWORDS and k not in ("properties", "items")}
        if "properties" in node:
            out["properties"] = {k: convert(v) for k, v in node["properties"].items()}
            out["propertyOrdering"] = list(node["properties"])
        if "items" in node:
            out["items"] = convert(node["items"])
        return out

    return convert(schema)


# ----------------------------------------------------------------------------- errors


def _exc_status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _is_api_error(exc: BaseException) -> bool:
    from google.genai import errors

    return isinstance(exc, errors.APIError)


@functools.cache
def _network_error_types() -> tuple[type[BaseException], ...]:
    """Timeout and connection error classes of whichever HTTP stacks the SDK may use
    (httpx or its fork httpx2 normally, requests on the mTLS path)."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module, names in (("httpx", ("TimeoutException", "TransportError")),
                          ("httpx2", ("TimeoutException", "TransportError")),
                          ("requests.exceptions", ("Timeout", "ConnectionError"))):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(loaded, n) for n in names if hasattr(loaded, n)]
    return tuple(found)


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, _network_error_types())


def _is_auth_error(exc: BaseException) -> bool:
    from google.auth.exceptions import GoogleAuthError

    return isinstance(exc, GoogleAuthError)


def _transient(exc: BaseException) -> bool:
    if _is_api_error(exc):
        return _exc_status(exc) in RETRY_STATUSES
    return _is_network_error(exc)


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds from a Google RetryInfo detail ("retryDelay": "1.5s"), if the error carries one."""
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in (error or {}).get("details") or []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _api_message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)


# ----------------------------------------------------------------------------- the provider


class VertexProvider:
    name = "vertex"

    def __init__(self, *, model: str = DEFAULT_MODEL, project: str | None = None, location: str = "us-central1",
                 endpoint: str | None = None, token: str | None = None, request_timeout: float = 120.0,
                 max_attempts: int = 5, retry_max_seconds: float = 600.0, cache_dir: Path | str | None = None,
                 throttle: Any = None, backoff_initial: float = 1.0, backoff_max: float = 60.0,
                 temperature: float = 0.2):
        if endpoint and not token:
            raise ProviderError("vertex_endpoint is set but vertex_token is not: set SKILLBUILD_VERTEX_TOKEN "
                                "(any string works for the local fake server)", kind="config")
        self.model, self.project, self.location = model, project, location
        self.endpoint, self._token = endpoint, token
        self.request_timeout, self.max_attempts = request_timeout, max_attempts
        self.retry_max_seconds = retry_max_seconds
        self.backoff_initial, self.backoff_max, self.temperature = backoff_initial, backoff_max, temperature
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.throttle = throttle or NoThrottle()
        self.schema = analysis_schema()
        self._client = None

    def __repr__(self) -> str:  # never show the token
        return f"VertexProvider(model={self.model!r}, project={self.project!r}, location={self.location!r})"

    # -- public interface
    def analyse(self, plugin: PluginContext, prompt: str) -> Result:
        message, config = self.analysis_request(plugin)
        cached = self._cached(prompt, message, config, self._valid_analysis)
        if cached:
            return cached
        usage = Usage()
        for attempt in (1, 2):
            text = self._complete(prompt, message, config, usage)
            value, problem = self._parse_analysis(text)
            if problem is None:
                self._store(prompt, message, config, value, usage)
                return Result(value, self.model, usage)
            if attempt == 1:
                self._mark_retried(usage, f"invalid JSON: {problem}")
        raise ProviderError(f"{plugin.name}: the model's analysis is not valid JSON for the analysis schema "
                            f"after 2 tries ({problem}); rerun later or try another model", "invalid_json", usage)

    def generate(self, plugin: PluginContext, analysis: dict, prompt: str,
                 feedback: list[str] | None = None) -> Result:
        message, config = self.generation_request(plugin, analysis, feedback)
        cached = self._cached(prompt, message, config, _valid_generation)
        if cached:
            return cached
        usage = Usage()
        text = self._complete(prompt, message, config, usage).strip() + "\n"
        self._store(prompt, message, config, text, usage)
        return Result(text, self.model, usage)

    # -- requests and their cache keys; `doit plan` uses these too, so its cache hits are exact
    def analysis_request(self, plugin: PluginContext) -> tuple[str, Any]:
        """(user message, generation config) of the analysis call."""
        return analysis_message(plugin), self._config(ANALYSIS_MAX_TOKENS, json_mode=True)

    def generation_request(self, plugin: PluginContext, analysis: dict,
                           feedback: list[str] | None = None) -> tuple[str, Any]:
        """(user message, generation config) of the generation (or repair) call."""
        return generation_message(plugin, analysis, feedback), self._config(GENERATION_MAX_TOKENS, json_mode=False)

    def cached_analysis(self, plugin: PluginContext, prompt: str) -> Result | None:
        """The cached answer `analyse` would return without a call, or None."""
        message, config = self.analysis_request(plugin)
        return self._cached(prompt, message, config, self._valid_analysis)

    def cached_generation(self, plugin: PluginContext, analysis: dict, prompt: str,
                          feedback: list[str] | None = None) -> Result | None:
        """The cached answer `generate` would return without a call, or None."""
        message, config = self.generation_request(plugin, analysis, feedback)
        return self._cached(prompt, message, config, _valid_generation)

    def _valid_analysis(self, value: Any) -> bool:
        return isinstance(value, dict) and not self._schema_error(value)

    # -- cache
    def _cache_key(self, prompt: str, message: str, config: Any) -> str:
        return ResponseCache.key(self.model, prompt, message, config.model_dump(mode="json", exclude_none=True))

    def _cached(self, prompt: str, message: str, config: Any, valid: Callable[[Any], bool]) -> Result | None:
        if self.cache is None:
            return None
        entry = self.cache.get(self._cache_key(prompt, message, config))
        if entry is None or not valid(entry.get("value")):
            return None
        return Result(entry["value"], entry.get("model", self.model), Usage(cached=1))

    def _store(self, prompt: str, message: str, config: Any, value: Any, usage: Usage) -> None:
        if self.cache is not None:
            self.cache.put(self._cache_key(prompt, message, config),
                           {"value": value, "model": self.model, "input_tokens": usage.input_tokens,
                            "output_tokens": usage.output_tokens, "created": _now()})

    # -- one logical call
    def _config(self, max_tokens: int, *, json_mode: bool) -> Any:
        from google.genai import types

        extra = {"response_mime_type": "application/json",
                 "response_schema": vertex_schema(self.schema)} if json_mode else {}
        return types.GenerateContentConfig(temperature=self.temperature, max_output_tokens=max_tokens, **extra)

    def _complete(self, prompt: str, message: str, config: Any, usage: Usage) -> str:
        """The reply text: transient failures retried, one larger-budget retry on MAX_TOKENS."""
        text, finish = self._reply(self._send(prompt, message, config, usage), usage)
        if finish == "MAX_TOKENS":
            budget = min(MAX_TOKENS_CEILING, 2 * (config.max_output_tokens or GENERATION_MAX_TOKENS))
            self._mark_retried(usage, f"MAX_TOKENS at {config.max_output_tokens} tokens; retrying with {budget}")
            bigger = config.model_copy(update={"max_output_tokens": budget})
            text, finish = self._reply(self._send(prompt, message, bigger, usage), usage)
            if finish == "MAX_TOKENS":
                raise ProviderError(f"the model stopped at the output limit ({budget} tokens) twice; shorten the "
                                    "inputs (input_total_budget) or use a model with a larger output limit",
                                    "max_tokens", usage)
        return text

    def _reply(self, response: Any, usage: Usage) -> tuple[str, str]:
        """(text, finish reason) of the first candidate; safety blocks and empty replies are errors."""
        candidates = response.candidates or []
        if not candidates:
            feedback = getattr(response, "prompt_feedback", None)
            reason = getattr(getattr(feedback, "block_reason", None), "value", None)
            raise ProviderError("the model returned no candidates" + (f" (prompt blocked: {reason})" if reason
                                else "") + "; check the plugin inputs or rerun later", "empty", usage)
        finish = getattr(candidates[0].finish_reason, "value", candidates[0].finish_reason) or "STOP"
        if finish in SAFETY_REASONS:
            raise ProviderError(f"the model refused the request (finishReason {finish}); review the plugin "
                                "inputs for content that trips safety filters", "safety", usage)
        parts = getattr(candidates[0].content, "parts", None) or []
        text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
        if not text.strip() and finish != "MAX_TOKENS":
            raise ProviderError(f"the model returned an empty answer (finishReason {finish})", "empty", usage)
        return text, finish

    def _parse_analysis(self, text: str) -> tuple[dict | None, str | None]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        problem = self._schema_error(value)
        return (value, None) if problem is None else (None, problem)

    def _schema_error(self, value: Any) -> str | None:
        return best_error(value)

    # -- HTTP attempts
    def _send(self, prompt: str, message: str, config: Any, usage: Usage) -> Any:
        """One request through tenacity; every attempt passes the throttle and is recorded in `usage`."""
        started = time.monotonic()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_before_delay(self.retry_max_seconds),
            wait=self._wait, retry=tenacity.retry_if_exception(_transient), reraise=True,
            before_sleep=lambda state: self._mark_retried(usage))
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(prompt, message, config, usage)
        except ProviderError:
            raise
        except Exception as exc:
            if _is_api_error(exc) or _is_network_error(exc):
                raise self._failure(exc, usage, time.monotonic() - started) from None
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with jitter, never shorter than the server's RetryInfo delay."""
        base = tenacity.wait_exponential_jitter(initial=self.backoff_initial, max=self.backoff_max,
                                                jitter=self.backoff_initial)(state)
        exc = state.outcome.exception() if state.outcome else None
        return max(base, retry_after_of(exc) or 0.0) if exc else base

    def _attempt(self, prompt: str, message: str, config: Any, usage: Usage) -> Any:
        client = self._client_or_create()  # a setup error is no attempt: raise it before the throttle
        est = (len(prompt) + len(message)) // 4
        self.throttle.acquire(est)  # may raise for an exhausted daily budget: not ours to retry
        begun, when = time.monotonic(), _now()
        record = {"time": when, "status": None, "latency_s": 0.0, "input_tokens": 0, "output_tokens": 0,
                  "retried": False, "error": None}
        usage.attempts.append(record)
        usage.calls += 1
        _SENDING.throttle = self.throttle
        try:
            response = client.models.generate_content(
                model=self.model, contents=message, config=config.model_copy(update={"system_instruction": prompt}))
        except Exception as exc:
            failure = self._attempt_failed(exc, record, usage, begun)
            if failure is exc:
                raise  # the original error, for tenacity to judge
            raise failure from None
        finally:
            _SENDING.throttle = None
        record["latency_s"] = round(time.monotonic() - begun, 3)
        meta = response.usage_metadata
        tokens_in = (meta.prompt_token_count or 0) if meta else 0
        tokens_out = ((meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)) if meta else 0
        record.update(status=200, input_tokens=tokens_in, output_tokens=tokens_out)
        usage.input_tokens += tokens_in
        usage.output_tokens += tokens_out
        self.throttle.record(200, None, tokens_in + tokens_out)
        return response

    def _attempt_failed(self, exc: Exception, record: dict, usage: Usage, begun: float) -> Exception:
        """Record a failed attempt; return what to raise (API and network errors as they are)."""
        record["latency_s"] = round(time.monotonic() - begun, 3)
        status = _exc_status(exc) if _is_api_error(exc) else None
        label = f"HTTP {status}" if status else type(exc).__name__
        record["status"] = status
        record["error"] = self._scrub(f"{label}: {_api_message(exc)}")[:500]
        self.throttle.record(status, retry_after_of(exc), 0)
        if _is_api_error(exc) or _is_network_error(exc):
            return exc
        if _is_auth_error(exc):  # e.g. an expired ADC refresh token: no retry will fix it
            return ProviderError(f"Google credentials could not be refreshed ({record['error'][:200]}); run "
                                 "`gcloud auth application-default login` again", "auth", usage)
        return ProviderError(f"unexpected reply from Vertex AI ({record['error'][:200]}); rerun later, and "
                             "report it if it persists", "bad_response", usage)

    @staticmethod
    def _mark_retried(usage: Usage, error: str | None = None) -> None:
        if usage.attempts:
            usage.attempts[-1]["retried"] = True
            if error and not usage.attempts[-1]["error"]:
                usage.attempts[-1]["error"] = error

    def _failure(self, exc: BaseException, usage: Usage, elapsed: float) -> ProviderError:
        """A ProviderError that says what happened and what to fix."""
        status = _exc_status(exc) if _is_api_error(exc) else None
        detail = self._scrub(_api_message(exc))[:300]
        where = f"project {self.project or '(from ADC)'}, location {self.location}"
        fixes = {
            400: ("bad_request", f"Vertex AI rejected the request as invalid ({detail}); check the model id "
                                 f"'{self.model}' and the generation settings"),
            401: ("auth", f"Vertex AI rejected the credentials ({detail}); run `gcloud auth application-default "
                          "login`, or with vertex_endpoint set, set SKILLBUILD_VERTEX_TOKEN"),
            403: ("permission", f"permission denied for {where} ({detail}); enable the Vertex AI API in the "
                                "project and grant your account roles/aiplatform.user"),
            404: ("not_found", f"model '{self.model}' not found in {where} ({detail}); set a current model id "
                               "(e.g. gemini-2.5-flash) with SKILLBUILD_MODEL or [tool.skillbuild] model, and "
                               "check the location; gemini-2.0-flash is retired"),
        }
        if status == 404 and "requested url" in detail.lower():  # the front end's 404: no such path, not the model
            fixes[404] = ("endpoint", f"no such path at {self.endpoint or 'Vertex AI'} ({detail}); set "
                                      "vertex_endpoint to the base URL only, e.g. http://127.0.0.1:8080 (the SDK "
                                      "adds /v1beta1/projects/...), or unset it to reach Vertex AI")
        if status in fixes:
            kind, message = fixes[status]
            return ProviderError(self._scrub(message), kind, usage)
        kind = {429: "quota"}.get(status, "server" if status else "timeout" if "timeout" in type(exc).__name__.lower()
                                   else "connection")
        hint = {"quota": "the quota is exhausted; lower the request rate or wait for the quota to refill",
                "timeout": f"each attempt timed out after {self.request_timeout:g}s; raise request_timeout or "
                           "rerun later",
                "connection": f"could not reach {self.endpoint or 'Vertex AI'}; check the network or endpoint",
                "server": "Vertex AI kept failing; rerun later"}[kind]
        return ProviderError(self._scrub(f"Vertex AI call failed after {usage.calls} attempt(s) in {elapsed:.1f}s "
                                         f"(last: {status or type(exc).__name__}: {detail}); {hint}"), kind, usage)

    def _scrub(self, text: str) -> str:
        """Remove the bearer token: anywhere if it is long (real ones are), as a whole word if short
        (a test token like "x" must not mangle every word that contains an x)."""
        if not self._token:
            return text
        if len(self._token) >= 8:
            return text.replace(self._token, "***")
        return re.sub(rf"(?<![\w.-]){re.escape(self._token)}(?![\w.-])", "***", text)

    # -- client
    def _client_or_create(self) -> Any:
        """One SDK client per process and configuration: doit makes a provider per task, and a new client
        costs ~0.1 s of CPU (it loads the CA bundle twice), more than the rest of a task's work."""
        if self._client is None:
            key = (os.getpid(), self.endpoint, self._token, self.project, self.location, self.request_timeout)
            if key not in _CLIENTS:
                _CLIENTS[key] = self._make_client()
            self._client = _CLIENTS[key]
        return self._client

    def _make_client(self) -> Any:
        from google import genai
        from google.genai import types

        # The SDK counts milliseconds; its retries stay off. The hook stamps each request as it leaves.
        options = {"timeout": int(self.request_timeout * 1000),
                   "client_args": {"event_hooks": {"request": [_on_request]}}}
        if self.endpoint:
            from google.oauth2.credentials import Credentials

            return genai.Client(vertexai=True, project=self.project or "local", location=self.location,
                                credentials=Credentials(token=self._token),
                                http_options=types.HttpOptions(base_url=self.endpoint, **options))
        credentials, project = self._adc()
        try:
            return genai.Client(vertexai=True, project=project, location=self.location, credentials=credentials,
                                http_options=types.HttpOptions(**options))
        except ValueError as exc:
            raise ProviderError(f"cannot set up the Vertex AI client: {exc}", "config") from None

    def _adc(self) -> tuple[Any, str]:
        """Application Default Credentials, loaded here so a missing login is a clear error before any call."""
        import google.auth
        from google.auth.exceptions import GoogleAuthError

        try:
            credentials, adc_project = google.auth.default(scopes=[CLOUD_SCOPE])
        except GoogleAuthError as exc:
            raise ProviderError(f"no usable Google credentials ({str(exc)[:200]}); run `gcloud auth "
                                "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a service "
                                "account key; for a local endpoint set SKILLBUILD_VERTEX_ENDPOINT", "config") from None
        project = self.project or adc_project
        if not project:
            raise ProviderError("no Google Cloud project: set GOOGLE_CLOUD_PROJECT, SKILLBUILD_PROJECT or "
                                "[tool.skillbuild] project", "config")
        return credentials, project


def preload() -> None:
    """Import the SDK and build its lazily built pydantic models now. Called before `doit -n N` forks its
    workers, which then share them: otherwise each worker spends over a second of CPU on its first call."""
    from google import genai
    from google.genai import errors, types  # noqa: F401
    from google.oauth2.credentials import Credentials

    _network_error_types()
    # A throwaway client (nothing is sent) and one of each request and reply model.
    genai.Client(vertexai=True, project="preload", location="us-central1", credentials=Credentials(token="-"),
                 http_options=types.HttpOptions(base_url="http://127.0.0.1:9", timeout=1000))
    types.GenerateContentConfig(temperature=0.2, max_output_tokens=16, system_instruction="-",
                                response_mime_type="application/json", response_schema={"type": "OBJECT"})
    types.GenerateContentResponse.model_validate(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "-"}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _valid_generation(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ----------------------------------------------------------------------------- wiring


def build(settings: Any, throttle: Any = None) -> VertexProvider:
    """A provider from the Settings object (skillbuild.config)."""
    return VertexProvider(
        model=settings.model or DEFAULT_MODEL, project=settings.project, location=settings.location,
        endpoint=settings.vertex_endpoint, token=settings.vertex_token if settings.vertex_endpoint else None,
        request_timeout=settings.request_timeout, max_attempts=settings.max_attempts,
        retry_max_seconds=settings.retry_max_seconds, cache_dir=settings.responses_dir,
        throttle=throttle, backoff_initial=getattr(settings, "retry_backoff_seconds", 1.0))


def preflight(settings: Any, throttle: Any = None) -> tuple[bool, str]:
    """One cheap call that proves credentials, project, location and model; (ok, what to fix or what worked)."""
    provider = build(settings, throttle)
    provider.cache = None  # a preflight must reach the service
    provider.max_attempts = min(provider.max_attempts, 2)
    from google.genai import types

    config = types.GenerateContentConfig(max_output_tokens=16, temperature=0.0)
    where = f"model {provider.model} in project {provider.project or '(from ADC)'}, location {provider.location}"
    try:
        provider._send("Answer with the single word OK.", "ping", config, Usage())
    except ProviderError as exc:
        return False, f"Vertex AI preflight failed for {where}: {exc}"
    via = f" via {provider.endpoint}" if provider.endpoint else ""
    return True, f"Vertex AI reachable{via}: {where} answered"
