"""Gemini on Vertex AI through the google-genai SDK: requests for analysis (JSON mode) and SKILL.md generation.

Credentials: Application Default Credentials, unless an endpoint override is configured
(`vertex_endpoint` / SKILLBUILD_VERTEX_ENDPOINT): then, and only then, a static bearer token
(`vertex_token`) is used, which is how tests and benchmarks reach skillbuild/testing/fakevertex.py.

This module only builds requests, sends one attempt and reads the answer; the response cache, the
throttle, retries and attempt records are the calls path's (skillbuild/calls/). The SDK's own retries
stay off so that each attempt passes the throttle.

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
from typing import Any, Callable

from skillbuild.providers.base import Failure, PluginContext, ProviderError, RemoteProvider, Reply, Request
from skillbuild.skill.schema import analysis_schema

PLUGIN_TAG = "skillbuild-plugin"
ANALYSIS_TAG = "skillbuild-analysis"
FEEDBACK_TAG = "skillbuild-feedback"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SAFETY_REASONS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"})
ANALYSIS_MAX_TOKENS = 8192
GENERATION_MAX_TOKENS = 16384
MAX_TOKENS_CEILING = 65536  # Gemini 2.5 Flash output limit
# JSON Schema keywords the Vertex response-schema dialect (OpenAPI subset) understands.
SCHEMA_KEYWORDS = {"type", "description", "properties", "required", "items", "enum", "minLength", "maxLength",
                   "minimum", "maximum", "minItems", "maxItems", "nullable", "format"}


_CLIENTS: dict[tuple, Any] = {}  # SDK clients shared by the providers of one process (see _client_or_create)


_SENDING = threading.local()  # `on_sent` of the attempt this thread is sending (read by _on_request)


def _on_request(request: Any) -> None:
    """httpx request hook: the caller (the throttle) learns the real send time, taken once the request's body
    is written to the connection (httpcore's `trace` event): a connection to open or a busy interpreter can
    hold a request between the hook and the wire for a while, and the server's quota window counts it from
    when it arrives. Where there is no trace extension, the hook itself stamps it."""
    on_sent = getattr(_SENDING, "on_sent", None)
    if on_sent is None:
        return
    extensions = getattr(request, "extensions", None)
    if not isinstance(extensions, dict):
        on_sent()
        return
    earlier = extensions.get("trace")

    def trace(name: str, info: dict) -> None:
        if earlier is not None:
            earlier(name, info)
        if name.endswith("send_request_body.complete"):
            on_sent()

    extensions["trace"] = trace


# ----------------------------------------------------------------------------- prompt building


def block(tag: str, value: Any) -> str:
    """A fenced single-line JSON block; sorted keys keep the cache key stable."""
    return f"```json {tag}\n{json.dumps(value, ensure_ascii=False, sort_keys=True)}\n```\n"


def plugin_data(plugin: PluginContext) -> dict:
    """The context as sent; `hand_written` only when there is one, so every other plugin's request (and cache
    key) is what it was before the field existed."""
    data = dataclasses.asdict(plugin)
    if not data.get("hand_written"):
        data.pop("hand_written", None)
    return data


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


class VertexProvider(RemoteProvider):
    name = "vertex"
    service = "Vertex AI"
    max_output_ceiling = MAX_TOKENS_CEILING
    can_batch = True  # batch prediction: providers/vertex_batch.py

    def __init__(self, *, model: str, project: str | None = None, location: str = "us-central1",
                 endpoint: str | None = None, token: str | None = None, request_timeout: float = 120.0,
                 temperature: float = 0.2):
        if endpoint and not token:
            raise ProviderError("vertex_endpoint is set but vertex_token is not: set SKILLBUILD_VERTEX_TOKEN "
                                "(any string works for the local fake server)", kind="config")
        self.model, self.project, self.location = model, project, location
        self.endpoint, self._token = endpoint, token
        self.request_timeout, self.temperature = request_timeout, temperature
        self.schema = analysis_schema()
        self._client = None

    def __repr__(self) -> str:  # never show the token
        return f"VertexProvider(model={self.model!r}, project={self.project!r}, location={self.location!r})"

    # -- requests: `doit plan` computes cache keys from these too, so its cache hits are exact
    def analysis_request(self, plugin: PluginContext, prompt: str) -> Request:
        return self._request(prompt, analysis_message(plugin), self._config(ANALYSIS_MAX_TOKENS, json_mode=True))

    def generation_request(self, plugin: PluginContext, analysis: dict, prompt: str,
                           feedback: list[str] | None = None) -> Request:
        return self._request(prompt, generation_message(plugin, analysis, feedback),
                             self._config(GENERATION_MAX_TOKENS, json_mode=False))

    def ping_request(self) -> Request:
        from google.genai import types

        return self._request("Answer with the single word OK.", "ping",
                             types.GenerateContentConfig(max_output_tokens=16, temperature=0.0))

    def with_max_tokens(self, request: Request, budget: int) -> Request:
        return self._request(request.prompt, request.message,
                             request.native.model_copy(update={"max_output_tokens": budget}))

    def _request(self, prompt: str, message: str, config: Any) -> Request:
        # The settings are the config without the system instruction (the prompt is a key part of its own).
        return Request(self.model, prompt, message, config.model_dump(mode="json", exclude_none=True),
                       config.max_output_tokens or GENERATION_MAX_TOKENS, native=config)

    def _config(self, max_tokens: int, *, json_mode: bool) -> Any:
        from google.genai import types

        extra = {"response_mime_type": "application/json",
                 "response_schema": vertex_schema(self.schema)} if json_mode else {}
        return types.GenerateContentConfig(temperature=self.temperature, max_output_tokens=max_tokens, **extra)

    # -- one attempt
    def connect(self) -> None:
        self._client_or_create()

    def send(self, request: Request, on_sent: Callable[[], None] | None = None) -> Reply:
        client = self._client_or_create()
        _SENDING.on_sent = on_sent
        try:
            response = client.models.generate_content(
                model=request.model, contents=request.message,
                config=request.native.model_copy(update={"system_instruction": request.prompt}))
        finally:
            _SENDING.on_sent = None
        return _reply(response)

    def failure(self, exc: Exception) -> Failure:
        status = _exc_status(exc) if _is_api_error(exc) else None
        label, message = f"HTTP {status}" if status else type(exc).__name__, self._scrub(_api_message(exc))
        if _is_api_error(exc):
            return Failure("http", label, message, status, retry_after_of(exc))
        if _is_network_error(exc):
            return Failure("timeout" if "timeout" in label.lower() else "connection", label, message)
        if _is_auth_error(exc):  # e.g. an expired ADC refresh token: no retry will fix it
            return Failure("auth", label, message)
        return Failure("bad_response", label, message)

    def explain(self, failure: Failure, calls: int, seconds: float) -> tuple[str, str]:
        """(kind, message) that says what happened and what to fix."""
        if failure.kind == "auth":
            return "auth", (f"Google credentials could not be refreshed ({failure.error[:200]}); run "
                            "`gcloud auth application-default login` again")
        if failure.kind == "bad_response":
            return "bad_response", (f"unexpected reply from Vertex AI ({failure.error[:200]}); rerun later, and "
                                    "report it if it persists")
        status, detail = failure.status, failure.message[:300]
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
            return kind, self._scrub(message)
        kind = {429: "quota"}.get(status, "server" if status else failure.kind)
        hint = {"quota": "the quota is exhausted; lower the request rate or wait for the quota to refill",
                "timeout": f"each attempt timed out after {self.request_timeout:g}s; raise request_timeout or "
                           "rerun later",
                "connection": f"could not reach {self.endpoint or 'Vertex AI'}; check the network or endpoint",
                "server": "Vertex AI kept failing; rerun later"}[kind]
        return kind, self._scrub(f"Vertex AI call failed after {calls} attempt(s) in {seconds:.1f}s "
                                 f"(last: {status or failure.label}: {detail}); {hint}")

    def describe(self) -> str:
        return f"model {self.model} in project {self.project or '(from ADC)'}, location {self.location}"

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


def _reply(response: Any) -> Reply:
    """The first candidate's text and finish reason, and the tokens the attempt used."""
    meta = response.usage_metadata
    tokens_in = (meta.prompt_token_count or 0) if meta else 0
    tokens_out = ((meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)) if meta else 0
    candidates = response.candidates or []
    if not candidates:
        feedback = getattr(response, "prompt_feedback", None)
        reason = getattr(getattr(feedback, "block_reason", None), "value", None)
        return Reply("", None, tokens_in, tokens_out, blocked=reason)
    finish = getattr(candidates[0].finish_reason, "value", candidates[0].finish_reason) or "STOP"
    parts = getattr(candidates[0].content, "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    return Reply(text, finish, tokens_in, tokens_out, truncated=finish == "MAX_TOKENS",
                 refused=finish in SAFETY_REASONS)


# ----------------------------------------------------------------------------- wiring


def build(settings: Any) -> VertexProvider:
    """A provider from the Settings object (skillbuild.config)."""
    return VertexProvider(
        model=settings.model_id, project=settings.project, location=settings.location,
        endpoint=settings.vertex_endpoint, token=settings.vertex_token if settings.vertex_endpoint else None,
        request_timeout=settings.request_timeout)
