"""The offline provider: deterministic, no network, extractive.

It builds the analysis and the SKILL.md from the plugin's own files (manifest description and
keywords, README sections, commands, agents, hooks, MCP servers). Text copied from the plugin is
cleaned line by line with the same detectors the gates use, so the output passes them.
"""
from __future__ import annotations

import json
import re
from typing import Any

from skillbuild.skill import markdown, safety, skillmd, validation
from skillbuild.providers.base import InputFile, PluginContext, Provider, ProviderError, Result

MODEL = "extractive-v1"
BODY_BUDGET = 12_000  # bytes of body, leaving room for frontmatter and provenance under 14,000
LINE_BUDGET = 460
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def clean_inline(text: str) -> str:
    """One line of prose safe for frontmatter: no tags, no placeholders, no '---', single spaces."""
    text = validation.XML_TAG.sub("", text)
    text = validation.PLACEHOLDERS.sub("", text)
    text = text.replace("---", "-").replace("\r", " ").replace("\n", " ")
    return re.sub(r"\s+", " ", text).strip()


TEMPLATE = re.compile(r"\$\(|\$\{|\{\{")


def useful(text: str) -> str:
    """A description copied from a file, or "" when it is an unexpanded shell or template expression."""
    return "" if TEMPLATE.search(text or "") else text


def _title(name: str) -> str:
    return " ".join(part.capitalize() for part in re.split(r"[-_\s]+", name) if part)


def _files(plugin: PluginContext, prefix: str) -> list[InputFile]:
    return [f for f in plugin.files if f.rel.startswith(prefix) and f.rel.endswith(".md")]


def _first_paragraph(text: str) -> str:
    for block in re.split(r"\n\s*\n", _strip_frontmatter(text)):
        block = block.strip()
        if block and not block.startswith(("#", "```", "|", "<", "!", "[!", "-", "*", ">")):
            return clean_inline(block)
    return ""


def _strip_frontmatter(text: str) -> str:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end >= 0:
            return text[end + 4:].lstrip("\n")
    return text


def _named(files: list[InputFile], prefix: str) -> list[dict[str, str]]:
    named = []
    for f in files:
        meta = skillmd.read_frontmatter_fields(f.text)
        name = f.rel[len(prefix):-3].split("/")[-1]
        description = useful(meta.get("description", "")) or useful(_first_paragraph(f.text))
        named.append({"name": name, "description": clean_inline(description)[:300]})
    return named


def _json_keys(plugin: PluginContext, rel: str, field: str) -> list[str]:
    """Sorted keys of `field` in one of the plugin's JSON files (or of its top level); [] when absent or bad."""
    for f in plugin.files:
        if f.rel == rel:
            try:
                data = json.loads(f.text)
            except json.JSONDecodeError:
                return []
            found = data.get(field, data) if isinstance(data, dict) else {}
            return sorted(k for k in found if isinstance(k, str)) if isinstance(found, dict) else []
    return []


def _hook_events(plugin: PluginContext) -> list[str]:
    return _json_keys(plugin, "hooks/hooks.json", "hooks")


def _mcp_servers(plugin: PluginContext) -> list[str]:
    return _json_keys(plugin, ".mcp.json", "mcpServers")


def _readme(plugin: PluginContext) -> str:
    return next((f.text for f in plugin.files if "/" not in f.rel and f.rel.lower().startswith("readme")), "")


def _keywords(plugin: PluginContext) -> list[str]:
    words = plugin.manifest.get("keywords") or []
    return [clean_inline(str(w)) for w in words if isinstance(w, (str, int)) and clean_inline(str(w))][:12]


class OfflineProvider(Provider):
    name = "offline"
    model = MODEL
    can_repair = False  # deterministic: a second try would give the same text

    def analyse(self, plugin: PluginContext, prompt: str) -> Result:
        readme = _readme(plugin)
        summary = clean_inline(useful(str(plugin.manifest.get("description") or ""))) or useful(_first_paragraph(readme))
        summary = summary or f"The {plugin.name} plugin for Claude Code."
        commands = _named(_files(plugin, "commands/"), "commands/")
        agents = _named(_files(plugin, "agents/"), "agents/")
        triggers = [c["description"] for c in commands if c["description"]][:6]
        triggers += [f"work with {k}" for k in _keywords(plugin)][: max(0, 10 - len(triggers))]
        analysis = {
            "plugin": plugin.name,
            "skill_name": plugin.skill_name,
            "summary": summary[:2000],
            "description": self._description(plugin, summary, commands),
            "commands": commands,
            "agents": agents,
            "hooks": _hook_events(plugin),
            "mcp_servers": _mcp_servers(plugin),
            "triggers": triggers,
            "gaps": self._gaps(plugin, readme, commands),
            "sections": self._sections(commands, agents, plugin),
            "resources": list(plugin.scripts),
            "quality_before": self._quality_before(plugin),
            "quality_after_estimate": 60,
        }
        return Result(analysis, MODEL)

    @staticmethod
    def _description(plugin: PluginContext, summary: str, commands: list[dict[str, str]]) -> str:
        what = summary.rstrip(". ")
        uses = ", ".join(_keywords(plugin)[:6]) or plugin.name.replace("-", " ")
        text = f"{what}. Use when the task involves {uses}"
        if commands:
            text += f", or to run the plugin's commands ({', '.join('/' + c['name'] for c in commands[:5])})"
        return clean_inline(text + ".")[:1024]

    @staticmethod
    def _gaps(plugin: PluginContext, readme: str, commands: list[dict[str, str]]) -> list[str]:
        gaps = []
        skills = [f for f in plugin.files if f.rel.endswith("SKILL.md")]
        if not skills:
            gaps.append("no SKILL.md: Claude cannot discover this plugin as a skill")
        gaps += [f"{f.rel} is {len(f.text.encode())} bytes, under the 8,000-byte target" for f in skills
                 if len(f.text.encode()) < 8000]
        if not readme:
            gaps.append("no README")
        gaps += [f"command /{c['name']} has no description" for c in commands if not c["description"]]
        return gaps

    @staticmethod
    def _sections(commands: list, agents: list, plugin: PluginContext) -> list[str]:
        sections = ["Overview", "When to use this skill"]
        sections += ["Commands"] * bool(commands) + ["Agents"] * bool(agents)
        sections += ["Hooks"] * bool(_hook_events(plugin)) + ["MCP servers"] * bool(_mcp_servers(plugin))
        return sections + ["From the README", "Sources"]

    @staticmethod
    def _quality_before(plugin: PluginContext) -> int:
        skills = [f for f in plugin.files if f.rel.endswith("SKILL.md")]
        size = max((len(f.text.encode()) for f in skills), default=0)
        return min(100, size * 50 // 8000)

    def generate(self, plugin: PluginContext, analysis: dict, prompt: str,
                 feedback: list[str] | None = None) -> Result:
        if feedback:
            raise ProviderError("the offline provider cannot repair its output: " + "; ".join(feedback),
                                kind="gate")
        body = _Body(plugin)
        body.add_core(analysis)
        body.add_readme(_readme(plugin), analysis)
        for old in (f for f in plugin.files if f.rel.endswith("SKILL.md")):
            body.add_document(f"From the earlier skill ({old.rel})", _strip_frontmatter(old.text))
        body.add_sources()
        meta: dict[str, Any] = {"name": plugin.skill_name, "description": analysis["description"]}
        if isinstance(plugin.manifest.get("license"), str):
            meta["license"] = clean_inline(plugin.manifest["license"])[:100]
        return Result(skillmd.render(meta, body.text()), MODEL)


class _Body:
    """Sections appended while they fit the byte and line budgets."""

    def __init__(self, plugin: PluginContext):
        self.plugin = plugin
        self.parts: list[str] = []
        own = [(f.rel, f.text) for f in plugin.files]
        self.known_commands = {*plugin.commands, *validation.skill_commands(own), plugin.skill_name}
        self.namespaces = {plugin.name, plugin.skill_name, str(plugin.manifest.get("name") or plugin.name)}
        self.known_agents = set(plugin.agents)
        self.vouchers = safety.vouchers_from(own, plugin.manifest)

    def size(self) -> int:
        return len(self._joined().encode())

    def lines(self) -> int:
        return self._joined().count("\n")

    def _joined(self) -> str:
        return "\n".join(self.parts).rstrip() + "\n"

    def text(self) -> str:
        """The body; a heading whose sections were all left out is left out too."""
        return markdown.drop_empty_sections(self._joined())

    def fits(self, block: str) -> bool:
        return (self.size() + len(block.encode()) <= BODY_BUDGET
                and self.lines() + block.count("\n") + 1 <= LINE_BUDGET)

    def add(self, block: str) -> bool:
        if not block:
            return False
        if self.fits(block):
            self.parts.append(block)
            return True
        return False

    def add_core(self, analysis: dict) -> None:
        self.add(f"# {_title(self.plugin.name)}\n\n{analysis['summary']}\n")
        self.add(self._list("When to use this skill", analysis["triggers"], lambda t: t[:1].upper() + t[1:]))
        for title, items, fmt in (
            ("Commands", analysis["commands"], lambda c: f"`/{c['name']}`: {c['description'] or 'no description given'}"),
            ("Agents", analysis["agents"], lambda a: f"`{a['name']}` agent: {a['description'] or 'no description given'}"),
            ("Hooks", analysis["hooks"], lambda h: f"`{h}` event"),
            ("MCP servers", analysis["mcp_servers"], lambda s: f"`{s}`"),
            ("Bundled scripts", analysis["resources"], lambda r: f"`{r}`"),
        ):
            if items:
                self.add(self._list(title, items, fmt))

    def _list(self, title: str, items: list, fmt) -> str:
        lines = [f"- {clean_inline(fmt(item))}" for item in items]
        kept = [line for line in lines if not self._unsafe(line, in_fence=False)]
        return f"## {title}\n\n" + "\n".join(kept) + "\n" if kept else ""

    def add_readme(self, readme: str, analysis: dict) -> None:
        self.add_document("From the README", _strip_frontmatter(readme))

    def add_document(self, title: str, text: str) -> None:
        """A document's sections under one heading, each cleaned; a section that does not fit is left out whole."""
        sections = _sections(text)
        if not sections:
            return
        if not self.add(f"## {title}\n"):
            return
        for heading, lines in sections:
            block = self._clean_section(heading, lines)
            if block:
                self.add(block)  # a section that does not fit is left out whole, never cut mid-fence

    def _clean_section(self, heading: str, lines: list[str]) -> str:
        kept: list[str] = []
        in_fence = False
        for line in lines:
            if FENCE.match(line):
                in_fence = not in_fence
                kept.append(line)
                continue
            if self._unsafe(line, in_fence):
                continue
            match = HEADING.match(line) if not in_fence else None
            kept.append(f"#### {clean_inline(match.group(2))}" if match else line.rstrip())
        if in_fence:
            kept.append("```")
        text = "\n".join(kept).strip()
        text = re.sub(r"\n{3,}", "\n\n", text)
        title = clean_inline(heading) or "Notes"
        return f"### {title}\n\n{text}\n" if text else ""

    def _unsafe(self, line: str, in_fence: bool) -> bool:
        """A copied line the gates would reject: a placeholder in prose (template syntax in code is real),
        a command or agent the plugin lacks, a credential path, an unvouched upload or URL host."""
        if not in_fence and markdown.has_placeholder(line):
            return True
        if safety.unsafe_line(line, self.vouchers):
            return True
        probe = line.lstrip() if in_fence else line
        if validation.unknown_commands(probe, self.known_commands, self.namespaces):
            return True
        return bool(validation.mentioned_agents(line) - self.known_agents)

    def add_sources(self) -> None:
        names = ", ".join(f"`{f.rel}`" for f in self.plugin.files) or "the plugin manifest"
        block = ("## Sources\n\nWritten by skillbuild's offline provider from the plugin's own files "
                 f"({names}). Run skillbuild with the Vertex provider for a fuller, AI-written skill.\n")
        if not self.add(block):
            self.parts.append("## Sources\n\nWritten by skillbuild's offline provider from the plugin's own files.\n")


def _sections(readme: str) -> list[tuple[str, list[str]]]:
    """README split at level-1/2 headings (outside code fences); text before the first is 'Overview'."""
    sections: list[tuple[str, list[str]]] = []
    heading, lines, in_fence = "Overview", [], False
    for line in readme.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"^#{1,2}\s+(.*)$", line)
        if match:
            if any(x.strip() for x in lines):
                sections.append((heading, lines))
            heading, lines = match.group(1), []
        else:
            lines.append(line)
    if any(x.strip() for x in lines):
        sections.append((heading, lines))
    return sections
