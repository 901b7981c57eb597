"""The gates a SKILL.md must pass before it may be written (rules from the Agent Skills spec and ours).

`check_skill` returns reasons, one per problem; an empty list means the text may be written.
"""
from __future__ import annotations

import re
from pathlib import Path

from skillbuild.skill import markdown, safety, secrets, skillmd

PLACEHOLDERS = markdown.PLACEHOLDERS
XML_TAG = re.compile(r"</?[A-Za-z][\w:-]*(\s[^<>]*)?/?>")
# Claude Code's own slash commands, and path roots that read like commands but are folders.
BUILTIN_COMMANDS = frozenset(
    "add-dir agents bashes bug clear compact config context cost doctor exit export help hooks ide init "
    "install-github-app login logout mcp memory model output-style permissions plugin pr-comments "
    "privacy-settings release-notes resume review rewind sandbox security-review status statusline "
    "terminal-setup todos upgrade usage vim".split())
PATH_ROOTS = frozenset("bin boot dev etc home lib mnt opt proc root run sbin srv sys tmp usr var".split())
HTTP_VERB = re.compile(r"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+$")
SLASH = re.compile(r"(?:(?<=^)|(?<=[\s(\"'`]))/([a-z][a-z0-9-]*(?::[a-z0-9-]+)?)(?![\w/.-]*[\w/])")
AT_AGENT = re.compile(r"(?<![\w.@/`])@([a-z][a-z0-9-]*[a-z0-9])(?![\w@/-]|\.[A-Za-z])")
NAMED_AGENT = re.compile(r"`([a-z0-9][a-z0-9-]*)`\s+(?:sub-?)?agent\b|\b(?:sub-?)?agent\s+`([a-z0-9][a-z0-9-]*)`",
                         re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")


def check_skill(text: str, skill_name: str, *, min_bytes: int, max_bytes: int, max_body_lines: int,
                commands: tuple[str, ...] | list[str] = (), agents: tuple[str, ...] | list[str] = (),
                namespaces: tuple[str, ...] | list[str] = (), original: dict | None = None,
                vouchers: safety.Vouchers | None = None, skill_dir: Path | None = None,
                carried: tuple[str, ...] | list[str] = (), max_body_tokens: int | None = None,
                pending: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Every reason `text` may not be written as skills/<skill_name>/SKILL.md.

    `namespaces`: the plugin's names, so `/plugin:command` counts as the plugin's command. `original`: the
    frontmatter of the hand-written SKILL.md at the target, if any (its `allowed-tools` may be repeated).
    `vouchers`: what the plugin's own files say (hosts are checked only when given). `skill_dir`: the folder
    the file is written to; relative links must resolve from it (checked only when given). `carried` names
    frontmatter keys copied verbatim from a hand-written original: the spec check accepts them even outside
    the spec's keys (Claude Code's `user-invocable`, `argument-hint`, ...); a key the model adds is still
    rejected. `max_body_tokens`: the body's budget in estimated tokens (bytes / 4). `pending`: files (relative
    to `skill_dir`) written with this one, e.g. its references, that a link may name before they exist.
    """
    parsed = _parse(text)
    if isinstance(parsed, list):
        return parsed
    meta, body = parsed
    from skills_ref.validator import validate_metadata

    spec_meta = {k: v for k, v in meta.items() if k not in set(carried) - set(skillmd.ALLOWED_KEYS)}
    reasons = [f"frontmatter: {r}" for r in validate_metadata(spec_meta, Path(skill_name))]
    reasons += _frontmatter_rules(meta)
    reasons += _size_rules(text, body, min_bytes, max_bytes, max_body_lines)
    reasons += _token_rules(body, max_body_tokens)
    reasons += _content_rules(text, body)
    reasons += _reference_rules(body, set(commands), set(agents), set(namespaces) | {skill_name})
    reasons += safety.check(meta, text, original, vouchers)
    reasons += _markdown_rules(text, skill_dir, pending)  # the whole file, so line numbers are the file's
    return reasons + _secret_rules(text)


def lint_skill(text: str, skill_dir: Path, *, max_bytes: int, max_body_lines: int) -> list[str]:
    """The checks that apply to any SKILL.md, hand-written ones included (the pre-commit hook, skillbuild/hook.py):
    the Agent Skills spec, placeholders, secrets, relative links, empty sections and the size budget.

    Not the checks that judge model output against the plugin or an original (never-worse, allowed-tools,
    hosts, slash commands and agents), and no minimum size: a short hand-written skill is the maintainer's call.
    """
    parsed = _parse(text)
    if isinstance(parsed, list):
        return parsed
    meta, body = parsed
    from skills_ref.validator import validate_metadata

    reasons = [f"frontmatter: {r}" for r in validate_metadata(meta, skill_dir)]
    reasons += _frontmatter_rules(meta)
    reasons += _size_rules(text, body, 1, max_bytes, max_body_lines)
    reasons += _content_rules(text, body)
    reasons += _markdown_rules(text, skill_dir)
    return reasons + _secret_rules(text)


def _parse(text: str):
    """(frontmatter, body), or the one reason the file cannot be read as a SKILL.md at all."""
    if text.lstrip().startswith(("```", "~~~")):
        return ["the file is wrapped in a code fence; it must start with '---' frontmatter"]
    try:
        return skillmd.parse(text)
    except skillmd.FrontmatterError as exc:
        return [f"frontmatter: {exc}"]


def _secret_rules(text: str) -> list[str]:
    found = secrets.findings(text)
    return ["secrets: a credential is present (value withheld): " + ", ".join(found[:5])] if found else []


def estimated_tokens(text: str) -> int:
    """A body's size in tokens as skill linters estimate it: bytes / 4."""
    return len(text.encode("utf-8")) // 4


def _token_rules(body: str, max_body_tokens: int | None) -> list[str]:
    tokens = estimated_tokens(body)
    if max_body_tokens is not None and tokens > max_body_tokens:
        return [f"body is about {tokens} tokens (bytes / 4); at most {max_body_tokens} are allowed: move detail "
                "to references/ files linked from the body"]
    return []


def check_reference(rel: str, text: str, *, max_bytes: int, commands=(), agents=(), namespaces=(),
                    vouchers: safety.Vouchers | None = None, skill_dir: Path | None = None,
                    pending: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Every reason a reference file `rel` (relative to the skill's folder) may not be written: the same
    content, link, safety and secret gates as the SKILL.md, a name one level under references/, a size cap."""
    from skillbuild.skill import references

    if not references.NAME.match(rel):
        return [f"{rel}: a skill's extra files must be references/<name>.md (lowercase, one level deep)"]
    reasons = []
    size = len(text.encode("utf-8"))
    if size > max_bytes or not text.strip():
        reasons.append(f"size is {size} bytes; it must be 1-{max_bytes} bytes")
    reasons += _content_rules(text, text)
    reasons += _reference_rules(text, set(commands), set(agents), set(namespaces))
    reasons += safety.check({}, text, None, vouchers)
    folder = skill_dir / "references" if skill_dir is not None else None
    reasons += _markdown_rules(text, folder, [f"../{p}" for p in pending])
    reasons += _secret_rules(text)
    return [f"{rel}: {r}" for r in reasons]


def _markdown_rules(text: str, skill_dir: Path | None, pending=()) -> list[str]:
    reasons = []
    empty = markdown.empty_sections(text)
    if empty:
        reasons.append("sections: empty sections (a heading with nothing under it): " + ", ".join(empty[:5]))
    broken = markdown.broken_links(text, skill_dir, pending) if skill_dir is not None else []
    if broken:
        reasons.append("links: relative links whose target does not exist from the skill's folder: "
                       + ", ".join(broken[:5]))
    return reasons


def _frontmatter_rules(meta: dict) -> list[str]:
    reasons = []
    description = meta.get("description")
    if isinstance(description, str) and XML_TAG.search(description):
        reasons.append("frontmatter: description contains an XML/HTML tag")
    for key, value in _flat_values(meta):
        if "---" in value:
            reasons.append(f"frontmatter: value of '{key}' contains '---'")
    metadata = meta.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        reasons.append("frontmatter: 'metadata' must be a map of string keys to string values")
    return reasons


def _flat_values(meta: dict, prefix: str = ""):
    for key, value in meta.items():
        if isinstance(value, dict):
            yield from _flat_values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(value)


def _size_rules(text: str, body: str, min_bytes: int, max_bytes: int, max_body_lines: int) -> list[str]:
    reasons = []
    size = len(text.encode("utf-8"))
    if not min_bytes <= size <= max_bytes:
        reasons.append(f"size is {size} bytes; it must be {min_bytes}-{max_bytes} bytes")
    lines = len(body.splitlines())
    if lines > max_body_lines:
        reasons.append(f"body has {lines} lines; at most {max_body_lines} are allowed")
    if not body.strip():
        reasons.append("body is empty")
    return reasons


def _content_rules(text: str, body: str) -> list[str]:
    reasons = []
    found = markdown.placeholders(text)
    if found:
        reasons.append(f"placeholder text present: {', '.join(found[:8])}")
    lines = [line for line in body.strip().splitlines() if line.strip()]
    if lines and FENCE.match(lines[0]) and FENCE.match(lines[-1]) and _first_fence_closes_at_end(lines):
        reasons.append("body is wrapped in a code fence")
    return reasons


def _first_fence_closes_at_end(lines: list[str]) -> bool:
    closes = [i for i, line in enumerate(lines[1:], start=1) if FENCE.match(line)]
    return bool(closes) and closes[0] == len(lines) - 1


def mentioned_commands(body: str) -> set[str]:
    """Slash commands the text names: in prose, in inline code, and at the start of lines in code blocks."""
    found: set[str] = set()
    in_fence = False
    for line in body.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        scan = line.lstrip() if in_fence else line
        for match in SLASH.finditer(scan):
            if in_fence and match.start() > 0:
                continue  # inside code only a command at the start of a line is a command
            if HTTP_VERB.search(scan[: match.start()]):
                continue  # "GET /users" is an endpoint
            found.add(match.group(1))
    return found


def unknown_commands(text: str, commands: set[str], namespaces: set[str]) -> set[str]:
    """Slash commands `text` names that are neither the plugin's nor Claude Code's. `/plugin:command` is the
    plugin's when `plugin` is one of `namespaces` and `command` one of `commands`."""
    unknown = set()
    for token in mentioned_commands(text):
        space, _, name = token.rpartition(":")
        if space and space not in namespaces:
            unknown.add(token)
        elif name not in commands and name not in BUILTIN_COMMANDS and (space or name not in PATH_ROOTS):
            unknown.add(token)
    return unknown


def skill_commands(files) -> set[str]:
    """Names users type for the skills a plugin defines (`skills/<folder>/SKILL.md`, folder and `name:`)."""
    names = set()
    for rel, text in files:
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] == "skills" and parts[2] == "SKILL.md":
            names.add(parts[1])
            from skillbuild.discovery import read_frontmatter_fields  # deferred: discovery imports providers

            declared = read_frontmatter_fields(text).get("name")
            if declared:
                names.add(declared)
    return names


def mentioned_agents(body: str) -> set[str]:
    names = {m.group(1) for m in AT_AGENT.finditer(body)}
    names |= {a or b for a, b in NAMED_AGENT.findall(body)}
    return names


def _reference_rules(body: str, commands: set[str], agents: set[str], namespaces: set[str]) -> list[str]:
    reasons = []
    unknown = sorted(unknown_commands(body, commands, namespaces))
    if unknown:
        reasons.append("names slash commands the plugin does not have: " + ", ".join("/" + c for c in unknown))
    ghosts = sorted(mentioned_agents(body) - agents)
    if ghosts:
        reasons.append("names agents the plugin does not have: " + ", ".join(ghosts))
    return reasons
