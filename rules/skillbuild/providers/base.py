"""The provider interface: plugin inputs in, analysis dict or SKILL.md text out, with declared capabilities.

A provider knows nothing of doit, files on disk, the response cache, the throttle or the audit DB: the
build hands it a `PluginContext` (already read, filtered and budgeted) and the prompt text. A local
provider (offline) answers `analyse`/`generate` itself. A remote provider only turns a call into a
`Request`, one `Request` into one SDK call (`send`), and the answer into a `Reply`; the calls path
(skillbuild/calls/) caches, paces, retries and records every attempt. Providers raise `ProviderError`
with a message a maintainer can act on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class InputFile:
    """One plugin file as the provider sees it (path relative to the plugin folder)."""

    rel: str
    text: str
    truncated: bool = False


@dataclass(frozen=True)
class PluginContext:
    """Everything a provider may read about one plugin."""

    name: str  # catalog or manifest name
    skill_name: str  # valid Agent Skills name; also the target folder name
    manifest: dict[str, Any]  # plugin.json merged over the catalog entry
    files: tuple[InputFile, ...]  # text inputs in priority order, within the byte budget
    scripts: tuple[str, ...] = ()  # names (never contents) of bundled scripts
    commands: tuple[str, ...] = ()  # slash command names the plugin defines, without "/"
    agents: tuple[str, ...] = ()  # agent names the plugin defines
    cut: tuple[str, ...] = ()  # inputs left out or shortened by the byte budget, with why
    hand_written: str = ""  # rel of the hand-written SKILL.md being replaced (first in `files`), or ""


@dataclass
class Usage:
    """What one provider call cost, summed over its HTTP attempts."""

    calls: int = 0  # API requests actually sent (0 for offline or a cache hit)
    cached: int = 0  # answers served from the response cache
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)  # one dict per HTTP attempt


@dataclass
class Result:
    value: Any  # dict for analyse, str for generate (the SKILL.md)
    model: str
    usage: Usage = field(default_factory=Usage)
    files: dict[str, str] = field(default_factory=dict)  # generate: reference files, {"references/x.md": text}


class ProviderError(Exception):
    """A failure the maintainer must see; `kind` names the class of failure for the audit trail."""

    def __init__(self, message: str, kind: str = "provider", usage: Usage | None = None):
        super().__init__(message)
        self.kind = kind
        self.usage = usage or Usage()


@dataclass(frozen=True)
class Request:
    """One remote request exactly as it will be sent: the response cache key is computed from
    (model, prompt, message, settings), so a key can be known without sending anything."""

    model: str
    prompt: str  # the system instruction: the prompt file's text
    message: str  # the user message
    settings: dict[str, Any]  # the generation settings as JSON (output budget, JSON mode, ...)
    max_tokens: int  # the output budget in `settings`; a MAX_TOKENS retry doubles it
    native: Any = field(default=None, compare=False, repr=False)  # the provider's own form of `settings`


@dataclass(frozen=True)
class Reply:
    """One answer as text, with what the calls path needs to judge it."""

    text: str  # the answer's text (model thoughts left out)
    finish: str | None  # the finish reason as the service names it; None when it gave no candidate
    input_tokens: int = 0
    output_tokens: int = 0  # thinking included: it is billed and counts against the quota
    truncated: bool = False  # stopped at the output budget
    refused: bool = False  # stopped by a safety filter
    blocked: str | None = None  # why the prompt was blocked, when there is no candidate


@dataclass(frozen=True)
class Failure:
    """A failed attempt in the terms the calls path retries on; its texts are free of secrets."""

    kind: str  # "http" (an error status), "timeout", "connection", "auth" or "bad_response"
    label: str  # "HTTP 503" or the exception's class name
    message: str  # what the service or the client said
    status: int | None = None  # the HTTP status, for kind "http"
    retry_after: float | None = None  # the server's RetryInfo delay, if it sent one

    @property
    def error(self) -> str:
        """The attempt's error text, as its audit row keeps it."""
        return f"{self.label}: {self.message}"[:500]


class Provider:
    """Base of every provider. Capabilities are declared here and overridden by a provider that has them;
    callers read them, they never probe for methods."""

    name: str = ""  # "offline", "vertex"
    model: str = ""  # recorded in provenance and the audit DB
    is_remote: bool = False  # answers over the network: every request goes through the calls path
    has_cache_key: bool = False  # builds the exact `Request` before sending, so its answers are cacheable
    can_repair: bool = True  # a second generation fed the gate reasons may fix a rejected SKILL.md
    can_batch: bool = False  # can send many requests as one batch job

    # -- a local provider answers itself
    def analyse(self, plugin: PluginContext, prompt: str) -> Result:
        """Phase 1: return a dict valid against skillbuild/skill/schemas/analysis.schema.json."""
        raise NotImplementedError(f"{self.name} answers through the calls path (skillbuild.calls)")

    def generate(self, plugin: PluginContext, analysis: dict, prompt: str,
                 feedback: list[str] | None = None) -> Result:
        """Phase 2: return SKILL.md text. `feedback` holds gate failures for a repair attempt."""
        raise NotImplementedError(f"{self.name} answers through the calls path (skillbuild.calls)")


class RemoteProvider(Provider):
    """A provider behind an API: it builds requests and sends one attempt at a time; nothing more."""

    is_remote = True
    has_cache_key = True
    service: str = ""  # the service's name in messages, e.g. "Vertex AI"
    endpoint: str | None = None  # a configured endpoint override (tests, benchmarks), else None
    max_output_ceiling: int = 0  # the model's output limit: a MAX_TOKENS retry never asks for more

    def analysis_request(self, plugin: PluginContext, prompt: str) -> Request:
        raise NotImplementedError

    def generation_request(self, plugin: PluginContext, analysis: dict, prompt: str,
                           feedback: list[str] | None = None) -> Request:
        raise NotImplementedError

    def parse_generation(self, text: str) -> tuple[str, dict[str, str]]:
        """(SKILL.md, {"references/x.md": text}) from a generation answer (skill/references.py's format)."""
        from skillbuild.skill import references

        return references.split(text)

    def ping_request(self) -> Request:
        """The cheapest request that proves credentials, project, location and model."""
        raise NotImplementedError

    def with_max_tokens(self, request: Request, budget: int) -> Request:
        """The same request with another output budget."""
        raise NotImplementedError

    def connect(self) -> None:
        """Set up the client; a setup problem raises ProviderError here, before any attempt is counted."""
        raise NotImplementedError

    def send(self, request: Request, on_sent: Callable[[], None] | None = None) -> Reply:
        """One attempt, no retry; `on_sent` runs as the request leaves. Service errors are raised as they are."""
        raise NotImplementedError

    def failure(self, exc: Exception) -> Failure:
        """What an exception raised by `send` was."""
        raise NotImplementedError

    def explain(self, failure: Failure, calls: int, seconds: float) -> tuple[str, str]:
        """(kind, message saying what to fix) for the failure that ended a call after `calls` attempts."""
        raise NotImplementedError

    def describe(self) -> str:
        """What answers, for a preflight's message, e.g. "model M in project P, location L"."""
        raise NotImplementedError
