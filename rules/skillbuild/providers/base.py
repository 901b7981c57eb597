"""The provider interface: plugin inputs in, analysis dict or SKILL.md text out.

A provider knows nothing of doit, files on disk or the audit DB: the phases hand it a
`PluginContext` (already read, filtered and budgeted) and the prompt text, and it returns a
`Result`. Providers raise `ProviderError` with a message a maintainer can act on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


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
    value: Any  # dict for analyse, str for generate
    model: str
    usage: Usage = field(default_factory=Usage)


class ProviderError(Exception):
    """A failure the maintainer must see; `kind` names the class of failure for the audit trail."""

    def __init__(self, message: str, kind: str = "provider", usage: Usage | None = None):
        super().__init__(message)
        self.kind = kind
        self.usage = usage or Usage()


class Provider(Protocol):
    name: str  # "offline", "vertex"
    model: str  # recorded in provenance and the audit DB

    def analyse(self, plugin: PluginContext, prompt: str) -> Result:
        """Phase 1: return a dict valid against skillbuild/skill/schemas/analysis.schema.json."""

    def generate(
        self, plugin: PluginContext, analysis: dict, prompt: str, feedback: list[str] | None = None
    ) -> Result:
        """Phase 2: return SKILL.md text. `feedback` holds gate failures for a repair attempt."""
