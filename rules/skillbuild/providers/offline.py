"""The offline provider: deterministic, no network, extractive.

It builds the analysis and the skill from the plugin's own files (manifest, README, commands, agents, hooks,
MCP servers): a concise SKILL.md (what the plugin is for, when to use it, its workflow, every command and agent
at a glance) and `references/` files holding the detail (each command's and agent's full text, setup and
troubleshooting). Nothing is invented and nothing is padded: a section with nothing to say is left out. Text
copied from the plugin is cleaned line by line with the same detectors the gates use, so the output passes them.
"""
from __future__ import annotations

import json
import posixpath
import re
from typing import Any, Callable

from skillbuild.skill import markdown, safety, skillmd, validation
from skillbuild.providers.base import InputFile, PluginContext, Provider, ProviderError, Result

MODEL = "extractive-v1"  # the provenance model id; the settings hash marks older output stale
BODY_BUDGET = 12_000  # bytes of body, leaving room for frontmatter and provenance under 14,000
LINE_BUDGET = 400
REFERENCE_BUDGET = 36_000  # bytes of one reference file, under the gate's max_reference_bytes default
WORKFLOW_LINES = 40  # lines of the README's usage section kept in the body; the rest goes to a reference
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
TEMPLATE = re.compile(r"\$\(|\$\{|\{\{")
# README sections by what an agent needs from them (matched against the normalized heading).
USAGE = re.compile(r"\b(usage|quick ?start|getting started|how to use|how it works|workflow|examples?|commands?)\b", re.I)
SETUP = re.compile(r"\b(install\w*|setup|set up|configur\w*|requirements?|prerequisites?|troubleshoot\w*|"
                   r"faq|environment|settings|options|authentication|permissions)\b", re.I)
USES = re.compile(r"\b(use cases?|features?|when to use|capabilities|what it does|highlights|why)\b", re.I)
SKIP = re.compile(r"\b(licen[cs]e|contribut\w*|changelog|credits?|acknowledg\w*|author|support|table of contents|"
                  r"contents|roadmap|star history|sponsors?|related|links|version|resources)\b", re.I)
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$")
DEFINITION = re.compile(markdown.LINK_DEFINITION.pattern, re.MULTILINE)
EMOJI = re.compile(r"[^\w\s&/()'.,:+#@`-]")


def clean_inline(text: str) -> str:
    """One line of prose safe for frontmatter: no tags, no placeholders, no '---', single spaces."""
    text = validation.XML_TAG.sub("", text)
    text = validation.PLACEHOLDERS.sub("", text)
    text = text.replace("---", "-").replace("\r", " ").replace("\n", " ")
    return re.sub(r"\s+", " ", text).strip()


def useful(text: str) -> str:
    """A description copied from a file, or "" when it is an unexpanded shell or template expression."""
    return "" if TEMPLATE.search(text or "") else text


def shorten(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut at a sentence end or else a word boundary (never mid-word)."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1]
    sentence = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence >= limit // 2:
        return cut[:sentence + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut[:limit]).rstrip(" ,;:-") + "…"


def heading_text(text: str) -> str:
    """A heading as plain words: emoji, markup and decoration gone."""
    text = re.sub(r"[*_`]+|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", text)
    return re.sub(r"\s+", " ", EMOJI.sub("", clean_inline(text))).strip(" -:#")


def _plain(text: str) -> str:
    """A list item as plain prose: emphasis, links and leading emoji removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\*\*|__|(?<!\w)[*_](?!\s)|(?<!\s)[*_](?!\w)", "", text)
    return clean_inline(EMOJI.sub("", text).strip(" -:"))


def _strip_frontmatter(text: str) -> str:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end >= 0:
            return text[end + 4:].lstrip("\n")
    return text


def _first_paragraph(text: str) -> str:
    for block in re.split(r"\n\s*\n", _strip_frontmatter(text)):
        block = block.strip()
        if block and not block.startswith(("#", "```", "|", "<", "!", "[!", "-", "*", ">")):
            return clean_inline(block)
    return ""


def _files(plugin: PluginContext, prefix: str) -> list[InputFile]:
    return [f for f in plugin.files if f.rel.startswith(prefix) and f.rel.endswith(".md")]


def _named(files: list[InputFile], prefix: str) -> list[dict[str, str]]:
    named = []
    for f in files:
        meta = skillmd.read_frontmatter_fields(f.text)
        name = f.rel[len(prefix):-3].split("/")[-1]
        description = useful(meta.get("description", "")) or useful(_first_paragraph(f.text))
        named.append({"name": name, "description": shorten(clean_inline(description), 300)})
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


def display_name(plugin: PluginContext, readme: str) -> str:
    """The manifest's display name, else the README's title, else the plugin's own name as written."""
    for key in ("displayName", "display_name", "title"):
        value = plugin.manifest.get(key)
        if isinstance(value, str) and heading_text(value):
            return heading_text(value)
    sections = readme_sections(readme)
    title = next((h for level, h, _ in sections if level == 1 and heading_text(h)), "")
    return heading_text(title)[:80] or str(plugin.manifest.get("name") or plugin.name)


def readme_sections(readme: str) -> list[tuple[int, str, list[str]]]:
    """(level, heading, lines) of the README split at level-1/2 headings outside fences; text before the
    first heading has level 0 and heading 'Overview'."""
    sections: list[tuple[int, str, list[str]]] = []
    level, heading, lines, in_fence = 0, "Overview", [], False
    for line in _strip_frontmatter(readme).splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"^(#{1,2})\s+(.*)$", line)
        if match:
            if any(x.strip() for x in lines) or level == 1:
                sections.append((level, heading, lines))
            level, heading, lines = len(match.group(1)), match.group(2), []
        else:
            lines.append(line)
    if any(x.strip() for x in lines):
        sections.append((level, heading, lines))
    return sections


def _parts(sections: list) -> list[tuple[str, list[str]]]:
    """The README's sections an agent may need: not the text before the title, nor the title's own intro
    (the summary says it already)."""
    first_title = next((i for i, (level, _, _) in enumerate(sections) if level == 1), None)
    return [(h, lines) for i, (level, h, lines) in enumerate(sections) if level and i != first_title]


def _kind(heading: str) -> str:
    """What a README section is for: usage, setup, uses, skip or other (first match wins, skip first)."""
    words = heading_text(heading)
    for kind, pattern in (("skip", SKIP), ("setup", SETUP), ("usage", USAGE), ("uses", USES)):
        if pattern.search(words):
            return kind
    return "other"


def use_lines(readme: str, limit: int = 6) -> list[str]:
    """The README's use-case and feature lines as plain sentences (list items of such sections)."""
    found = []
    for heading, lines in _parts(readme_sections(readme)):
        if _kind(heading) != "uses":
            continue
        for line in lines:
            match = LIST_ITEM.match(line)
            item = _plain(match.group(1)) if match else ""
            if len(item) >= 12 and not TEMPLATE.search(item):
                found.append(shorten(item, 160))
    return found[:limit]


def _request(text: str) -> str:
    """A description as a bullet: its first sentence, capitalized, without a trailing period."""
    text = shorten(text, 200).rstrip(".…")
    return text[:1].upper() + text[1:]


def triggers_for(plugin: PluginContext, commands: list, agents: list, readme: str) -> list[str]:
    """What users would say: command and agent descriptions, README use-case lines, keywords as requests."""
    out: list[str] = []
    for item in commands + agents:
        if item["description"]:
            out.append(_request(item["description"]))
    out += [_request(line) for line in use_lines(readme)]
    out += [_request(line) for skill in other_skills(plugin) for line in skill["uses"]]
    words = _keywords(plugin)
    if words:
        out.append("Requests about " + _series(words[:8]))
    seen, unique = set(), []
    for line in out:
        if line.lower() not in seen:
            seen.add(line.lower())
            unique.append(line)
    return unique[:12]


def _lower_first(text: str) -> str:
    """'Generate x' -> 'generate x'; an acronym or a name ('API', 'GitHub') keeps its case."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _series(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def other_skills(plugin: PluginContext) -> list[dict[str, str]]:
    """The plugin's own skills besides the one being written: link (from skills/<name>/) and description."""
    out = []
    for f in plugin.files:
        parts = f.rel.split("/")
        if len(parts) != 3 or parts[0] != "skills" or parts[2] != "SKILL.md" or f.rel == plugin.hand_written:
            continue
        if parts[1] == plugin.skill_name:
            continue
        meta = skillmd.read_frontmatter_fields(f.text)
        out.append({"name": heading_text(meta.get("name") or "") or parts[1],
                    "link": posixpath.relpath(f.rel, f"skills/{plugin.skill_name}"),
                    "description": shorten(clean_inline(useful(_field(f.text, "description"))), 200),
                    "uses": _list_items(f.text, USES_IN_SKILL)})
    return out


USES_IN_SKILL = re.compile(r"\b(when to use|use cases?|triggers?|activat\w*)\b", re.I)


def _field(text: str, key: str) -> str:
    """A frontmatter value read loosely, a YAML block scalar (`key: |` then indented lines) included."""
    value = skillmd.read_frontmatter_fields(text).get(key, "")
    if value not in ("|", ">", "|-", ">-", "|+", ">+"):
        return value
    block = re.search(rf"(?m)^{re.escape(key)}:\s*[|>][-+]?\s*\n((?:[ \t]+.*\n?|\s*\n)+)", text)
    return clean_inline(block.group(1)) if block else ""


def _list_items(text: str, headings: re.Pattern, limit: int = 4) -> list[str]:
    """List items of the Markdown sections whose heading matches `headings`, as plain sentences."""
    found, inside, in_fence = [], False, False
    for line in _strip_frontmatter(text).splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            inside = bool(headings.search(heading_text(match.group(2))))
            continue
        item = LIST_ITEM.match(line) if inside and not in_fence else None
        if item and len(_plain(item.group(1))) >= 8 and not TEMPLATE.search(item.group(1)):
            found.append(shorten(_plain(item.group(1)), 160))
    return found[:limit]


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
        triggers = triggers_for(plugin, commands, agents, readme)
        analysis = {
            "plugin": plugin.name,
            "skill_name": plugin.skill_name,
            "summary": summary[:2000],
            "description": self._description(plugin, summary, commands, agents, triggers),
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
    def _description(plugin: PluginContext, summary: str, commands: list, agents: list, triggers: list) -> str:
        """What the plugin does, when to use it in its own terms, and every command and agent that fits."""
        text = shorten(summary, 400).rstrip(". …") + "."
        wants = [_request(c["description"]) for c in commands if c["description"]][:3]
        wants = wants or [_request(u) for skill in other_skills(plugin) for u in skill["uses"]][:3]
        if wants:
            text += " Use when the user wants to " + "; or ".join(_lower_first(w).rstrip(".…") for w in wants) + "."
        elif use_lines(_readme(plugin), 1):
            text += " Use for: " + "; ".join(w.rstrip(".…") for w in use_lines(_readme(plugin), 3)) + "."
        words = _keywords(plugin)[:6]
        if words:
            text += f" Also for requests about {_series(words)}."
        for label, names in (("Commands", ["/" + c["name"] for c in commands]),
                             ("Agents", [a["name"] for a in agents])):
            kept = []
            for name in names:  # whole names only, as many as fit under the 1,024-character limit
                if len(text) + len(f" {label}: ") + len(", ".join(kept + [name])) + 1 > 1000:
                    break
                kept.append(name)
            if kept:
                text += f" {label}: {', '.join(kept)}."
        return clean_inline(text)[:1024]

    @staticmethod
    def _gaps(plugin: PluginContext, readme: str, commands: list[dict[str, str]]) -> list[str]:
        gaps = []
        skills = [f for f in plugin.files if f.rel.endswith("SKILL.md")]
        if not skills:
            gaps.append("no SKILL.md: Claude cannot discover this plugin as a skill")
        if not readme:
            gaps.append("no README")
        gaps += [f"command /{c['name']} has no description" for c in commands if not c["description"]]
        return gaps

    @staticmethod
    def _sections(commands: list, agents: list, plugin: PluginContext) -> list[str]:
        sections = ["Overview", "When to use this skill", "Workflow"]
        sections += ["Commands"] * bool(commands) + ["Agents"] * bool(agents)
        sections += ["Hooks"] * bool(_hook_events(plugin)) + ["MCP servers"] * bool(_mcp_servers(plugin))
        return sections + ["Reference files"]

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
        writer = _Writer(plugin)
        body, files = writer.write(analysis, _readme(plugin))
        meta: dict[str, Any] = {"name": plugin.skill_name, "description": analysis["description"]}
        if isinstance(plugin.manifest.get("license"), str):
            meta["license"] = clean_inline(plugin.manifest["license"])[:100]
        return Result(skillmd.render(meta, body), MODEL, files=files)


class _Writer:
    """The body and the reference files of one plugin, from lines the gates would accept."""

    def __init__(self, plugin: PluginContext):
        self.plugin = plugin
        own = [(f.rel, f.text) for f in plugin.files]
        self.known_commands = {*plugin.commands, *validation.skill_commands(own), plugin.skill_name}
        self.namespaces = {plugin.name, plugin.skill_name, str(plugin.manifest.get("name") or plugin.name)}
        self.known_agents = set(plugin.agents)
        self.vouchers = safety.vouchers_from(own, plugin.manifest)

    def write(self, analysis: dict, readme: str) -> tuple[str, dict[str, str]]:
        sections = readme_sections(readme)
        files = self._references(analysis, sections)
        parts = [f"# {display_name(self.plugin, readme)}\n\n{analysis['summary']}\n"]
        parts.append(self._list("When to use this skill", analysis["triggers"], str))
        parts.append(self._workflow(sections, "references/usage.md" in files))
        parts += self._glance(analysis)
        parts.append(self._list("Other skills in this plugin", other_skills(self.plugin),
                                lambda s: f"[{s['name']}]({s['link']})" + (f": {s['description']}"
                                                                          if s["description"] else "")))
        parts.append(self._list("Reference files", sorted(files), lambda rel: f"[{rel}]({rel}): {WHEN[rel]}"))
        body = _fit(parts)
        return markdown.drop_empty_sections(body), files

    # -- the body
    def _glance(self, analysis: dict) -> list[str]:
        """Every command and agent with its own description (names only, when the list would not fit)."""
        out = []
        for title, items, fmt in (
            ("Commands", analysis["commands"], lambda c: f"`/{c['name']}`" + _colon(c["description"])),
            ("Agents", analysis["agents"], lambda a: f"`{a['name']}` agent" + _colon(a["description"])),
        ):
            block = self._list(title, items, fmt)
            if _too_long(block):
                names = ", ".join(f"`/{i['name']}`" if title == "Commands" else f"`{i['name']}`" for i in items)
                block = f"## {title}\n\n{names}\n\nEach one's description and full text: see the reference file below.\n"
            out.append(block)
        out.append(self._list("Hooks", analysis["hooks"], lambda h: f"`{h}` event"))
        out.append(self._list("MCP servers", analysis["mcp_servers"], lambda s: f"`{s}`"))
        out.append(self._list("Bundled scripts", analysis["resources"], lambda r: f"`{r}`"))
        return out

    def _workflow(self, sections: list, more: bool) -> str:
        usage = [(h, lines) for h, lines in _parts(sections) if _kind(h) == "usage"]
        if not usage:
            return ""
        heading, lines = usage[0]
        kept, _ = _split_head(self._clean(lines, in_references=False), WORKFLOW_LINES)
        if not kept:
            return ""
        tail = "\n\nMore usage detail: [references/usage.md](references/usage.md).\n" if more else "\n"
        return f"## Workflow\n\n{kept}{tail}"

    def _list(self, title: str, items: list, fmt: Callable) -> str:
        lines = [f"- {clean_inline(fmt(item))}" for item in items]
        kept = [line for line in lines if not self._unsafe(line, in_fence=False)]
        return f"## {title}\n\n" + "\n".join(kept) + "\n" if kept else ""

    # -- the reference files
    def _references(self, analysis: dict, sections: list) -> dict[str, str]:
        files = {
            "references/commands.md": self._documents("Commands", "commands/", analysis["commands"], "/", lambda c:
                                                      f"`/{c['name']}`" + _colon(c["description"])),
            "references/agents.md": self._documents("Agents", "agents/", analysis["agents"], "", lambda a:
                                                    f"`{a['name']}` agent" + _colon(a["description"])),
            "references/usage.md": self._readme_part("Usage", sections, "usage", WORKFLOW_LINES),
            "references/setup.md": self._readme_part("Setup and troubleshooting", sections, "setup", 0),
            "references/readme.md": self._readme_part("More from the README", sections, "other", 0),
        }
        return {rel: text for rel, text in files.items() if text}

    def _documents(self, title: str, prefix: str, items: list, mark: str, glance: Callable) -> str:
        """One section per command or agent: its description, then its file's text cleaned. One with no text
        beyond its description is left out while the body lists the descriptions (it would repeat them)."""
        texts = {f.rel[len(prefix):-3].split("/")[-1]: f.text for f in _files(self.plugin, prefix)}
        bare = _too_long(self._list(title, items, glance))  # the body lists names only: descriptions go here
        blocks = []
        for item in items:
            text = self._clean(_strip_frontmatter(texts.get(item["name"], "")).splitlines(), True)
            if not text.strip() and not bare:
                continue
            head = f"## {mark}{item['name']}\n\n"
            if item["description"] and not self._unsafe(item["description"], False):
                head += clean_inline(item["description"]) + "\n\n"
            blocks.append(head + (text.strip() + "\n" if text.strip() else ""))
        return _document(title, blocks)

    def _readme_part(self, title: str, sections: list, kind: str, skip_lines: int) -> str:
        blocks = []
        for heading, lines in _parts(sections):
            if _kind(heading) != kind:
                continue
            text = self._clean(lines, True)
            if skip_lines:
                text = _split_head(text, skip_lines)[1]  # what the body's Workflow left out
                skip_lines = 0
            if text.strip():
                blocks.append(f"## {heading_text(heading) or 'Notes'}\n\n{text.strip()}\n")
        return _document(title, blocks)

    # -- copied text
    def _clean(self, lines: list[str], in_references: bool) -> str:
        """Lines the gates accept: unsafe lines left out, headings normalized (the shallowest becomes level 3,
        under the section's own level-2 heading), fences closed, links made relative to references/ when the
        text lands there."""
        shift = 3 - _top_level(lines)
        kept: list[str] = []
        in_fence = False
        for line in lines:
            if FENCE.match(line):
                in_fence = not in_fence
                kept.append(line.rstrip())
                continue
            if self._unsafe(line, in_fence):
                continue
            match = HEADING.match(line) if not in_fence else None
            if match:
                level = min(6, max(3, len(match.group(1)) + shift))
                words = heading_text(match.group(2))
                if words:
                    kept.append("#" * level + " " + words)
                continue
            kept.append(line.rstrip())
        if in_fence:
            kept.append("```")
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
        if in_references:
            text = _one_level_down(text)
        return markdown.drop_empty_sections(text + "\n").strip() if text else ""

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


WHEN = {
    "references/commands.md": "read before running a command, for its full instructions, arguments and examples",
    "references/agents.md": "read before delegating to an agent, for its role, tools and instructions",
    "references/usage.md": "read for the full usage guide and more examples",
    "references/setup.md": "read when installing, configuring or troubleshooting the plugin",
    "references/readme.md": "read for background the other sections do not cover",
}


def _one_level_down(text: str) -> str:
    """Relative links (already written from the skill's folder) as seen from its references/ folder.
    Plain prefixing: the targets may lie above any real folder, where a path library would clamp them."""
    def one(match: re.Match) -> str:
        whole, raw = match.group(0), match.group(1)
        if not markdown.link_target(raw):
            return whole
        fixed = "<../" + raw[1:] if raw.startswith("<") else "../" + raw
        at = whole.rfind(raw)
        return whole[:at] + fixed + whole[at + len(raw):]

    return DEFINITION.sub(one, markdown.LINK.sub(one, text))


def _top_level(lines: list[str]) -> int:
    """The shallowest heading level among `lines` outside code fences (6 when there is none)."""
    levels, in_fence = [6], False
    for line in lines:
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and HEADING.match(line):
            levels.append(len(HEADING.match(line).group(1)))
    return min(levels)


def _too_long(block: str) -> bool:
    """A list too long for the body, which then names the items only."""
    return len(block.encode()) > BODY_BUDGET // 3


def _colon(description: str) -> str:
    """A list item's description; an item without one says so (the list names every item)."""
    return f": {shorten(description, 160)}" if description else ": no description given"


def _split_head(text: str, limit: int) -> tuple[str, str]:
    """(head, rest) of `text`: the head ends at the first blank line outside a code fence after `limit` lines
    (or at twice `limit` lines, outside a fence), so a paragraph or an example is never cut."""
    lines = text.splitlines()
    count, in_fence = 0, False
    for count, line in enumerate(lines):
        if not in_fence and count >= limit and (not line.strip() or count >= 2 * limit):
            break
        if FENCE.match(line):
            in_fence = not in_fence
    else:
        count = len(lines)
    return "\n".join(lines[:count]).strip(), "\n".join(lines[count:]).strip()


def _document(title: str, blocks: list[str]) -> str:
    """A reference file: a title and the blocks that fit its budget (a block that does not fit is left out
    whole); "" when no block has content."""
    text, kept = f"# {title}\n", 0
    for block in blocks:
        if len((text + "\n" + block).encode()) <= REFERENCE_BUDGET:
            text, kept = text + "\n" + block, kept + 1
    text = markdown.drop_empty_sections(text)
    return text if kept and len(markdown.headings(text)) > 1 else ""  # a title alone is no reference


def _fit(parts: list[str]) -> str:
    """The body's parts in order, each one kept whole while the body stays within its budgets."""
    body = ""
    for part in parts:
        if not part:
            continue
        candidate = body + ("\n" if body else "") + part
        if len(candidate.encode()) <= BODY_BUDGET and candidate.count("\n") <= LINE_BUDGET:
            body = candidate
    return body
