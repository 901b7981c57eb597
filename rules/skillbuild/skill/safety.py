"""Gates against text that steers the agent: granted permissions, credential paths, data sent out, unknown hosts.

What vouches for a command line or a URL host is the plugin's own machinery, never its prose: the manifest
(plugin.json and the catalog entry), `commands/`, `agents/`, `hooks/` and `.mcp.json`, and its scripts. The
README, docs and older skills do not vouch: that is where planted instructions live. HTML comments are
stripped before anything vouches.
"""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from skillbuild.skill import markdown

SCRIPT_SUFFIXES = {".py", ".sh", ".bash", ".zsh", ".js", ".mjs", ".cjs", ".ts", ".rb", ".go", ".pl", ".ps1", ".rs"}
VOUCHING_DIRS = ("commands/", "agents/", "hooks/", "scripts/", "bin/")
VOUCHING_FILES = (".mcp.json", "plugin.json", ".claude-plugin/plugin.json")
LOOPBACK = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}

# Paths and commands that read credentials; a skill never points the agent at them.
CREDENTIALS = re.compile(
    r"~/\.ssh\b|\$HOME/\.ssh\b|\$\{HOME\}/\.ssh\b|(?<![\w-])\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b"
    r"|\.aws/credentials\b|(?<![\w.])\.netrc\b|\.git-credentials\b"
    r"|\b(?:cat|less|more|head|tail|source|bat|type|strings|base64|xxd)\s+(?:[^\s|;&]*/)?\.env(?![\w.-])"
    r"|(?:^|\s)\.\s+(?:[^\s|;&]*/)?\.env(?![\w.-])|<\s*(?:[^\s|;&]*/)?\.env(?![\w.-])"
    r"|(?i:\bread(?:s|ing)?\s+(?:the\s+)?`?(?:[^\s`]*/)?\.env(?![\w.-]))"
    r"|\bsecurity\s+(?:find-(?:generic|internet)-password|dump-keychain)\b|\bLibrary/Keychains\b"
    r"|\blogin\.keychain\b|\bsecret-tool\s+lookup\b|\bkeyring\s+get\b")
# Ways to send data off the machine: uploads of a file, a download piped into a shell, raw sockets, encoding
# a file for pasting elsewhere.
EXFILTRATION = re.compile(
    r"\b(?:curl|wget|http|https|xh)\b[^\n]*?(?:\s-d\s*@|\s--data(?:-binary|-raw|-urlencode)?[\s=]+@"
    r"|\s-F\s*['\"]?[\w.-]+=@|\s--form[\s=]+['\"]?[\w.-]+=@|\s-T\s|\s--upload-file\b|\s--post-file\b"
    r"|\s--body-file\b)"
    r"|\b(?:curl|wget|fetch)\b[^\n|]*\|\s*(?:sudo\s+)?(?:ba|z|k|da|fi)?sh\b"
    r"|\b(?:curl|wget)\b[^\n|]*\|\s*(?:sudo\s+)?(?:python3?|perl|ruby|node)\b"
    r"|(?:^|[\s;|&(`$])(?:nc|ncat|netcat|socat)\s+[^\n]*"
    r"|\bbase64\s+(?:-[A-Za-z-]+\s+)*(?:-i\s+|--input[=\s]+)?[~$\w.-]*[/.][^\s|;&]*|\bbase64\s+[^\n|]*<"
    r"|\bcat\s+[^\s|]+\s*\|\s*base64\b")
# Text addressed to the model rather than the reader; the offline writer never copies such a line.
INJECTION = re.compile(r"(?i)\ballowed-tools\b|\bignore\s+(?:all\s+)?(?:your\s+|the\s+)?(?:previous|prior|above)\s+"
                       r"instructions\b|\bnote\s+to\s+(?:the\s+)?(?:ai|llm|model|assistant)s?\b")
URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s<>\"'`)\]}]+", re.IGNORECASE)


@dataclass
class Vouchers:
    """What the plugin's own machinery says: its command lines (whitespace-normalised) and URL hosts."""

    lines: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)

    def add(self, text: str) -> None:
        text = markdown.strip_comments(text)
        self.lines.update(normal(line) for line in text.splitlines() if line.strip())
        self.hosts.update(hosts_in(text))

    def vouches(self, line: str) -> bool:
        """Whether the command in `line` (from its tool word to the end of the line or of its inline code)
        appears in one of the plugin's own lines."""
        match = EXFILTRATION.search(line)
        command = line[match.start():] if match else line
        probe = normal(command.split("`", 1)[0])
        return bool(probe) and any(probe in known for known in self.lines)


def vouching(rel: str) -> bool:
    """Whether a plugin file (path relative to the plugin folder) may vouch for commands and hosts."""
    rel = rel.replace("\\", "/")
    return (rel in VOUCHING_FILES or rel.startswith(VOUCHING_DIRS)
            or posixpath.splitext(rel)[1].lower() in SCRIPT_SUFFIXES)


def vouchers_from(files, manifest: dict | None = None) -> Vouchers:
    """Vouchers from (relative path, text) pairs, of which only the vouching ones count, and the manifest."""
    found = Vouchers()
    for rel, text in files:
        if vouching(rel):
            found.add(text)
    if manifest:
        found.add(json.dumps(manifest, ensure_ascii=False, indent=1))
    return found


def vouchers_on_disk(folder: Path, rels, manifest: dict | None = None, cap: int = 200_000) -> Vouchers:
    """Vouchers read from a plugin folder: the listed files (inputs and script names), each cut at `cap`."""
    pairs = []
    for rel in rels:
        path = folder / rel
        if vouching(rel) and path.is_file():
            with path.open("rb") as handle:
                pairs.append((rel, handle.read(cap).decode("utf-8", errors="ignore")))
    return vouchers_from(pairs, manifest)


def normal(line: str) -> str:
    """A command line compared by its words: prompt signs, list bullets and quotes of Markdown left out."""
    line = re.sub(r"^\s*(?:[-*+]\s+|\d+\.\s+|\$\s+|>\s+)*", "", line)
    return " ".join(line.strip().strip("`").split())


def hosts_in(text: str) -> set[str]:
    found = set()
    for match in URL.finditer(text):
        try:
            host = urlsplit(match.group(0)).hostname
        except ValueError:
            continue
        if host:
            found.add(host.lower().rstrip("."))
    return found


def allowed_tools_rules(meta: dict, original: dict | None) -> list[str]:
    """`allowed-tools` grants permissions: only the hand-written original's value, unchanged, may appear."""
    if "allowed-tools" not in meta:
        return []
    theirs = (original or {}).get("allowed-tools")
    if theirs is not None and meta["allowed-tools"] == theirs:
        return []
    had = f"the hand-written original has {theirs!r}" if theirs is not None else "the hand-written original has none"
    return [f"permissions: frontmatter allowed-tools grants tool permissions and may only repeat the "
            f"hand-written original's value ({had}); remove it"]


def credential_rules(text: str) -> list[str]:
    found = [f"{m.group(0).strip()!r} on line {n}" for n, line in enumerate(text.splitlines(), start=1)
             for m in CREDENTIALS.finditer(line)]
    if not found:
        return []
    return ["credentials: points the agent at credentials, which a skill never does: " + ", ".join(found[:5])]


def exfiltration_rules(text: str, vouchers: Vouchers) -> list[str]:
    found = [f"line {n}" for n, line in enumerate(text.splitlines(), start=1)
             if EXFILTRATION.search(line) and not vouchers.vouches(line)]
    if not found:
        return []
    return ["exfiltration: sends data off the machine (upload, download piped to a shell, raw socket or base64 of a file) "
            "with a command the plugin's own command, agent, hook or script files do not contain: "
            + ", ".join(found[:5])]


def host_rules(text: str, vouchers: Vouchers) -> list[str]:
    unknown = sorted(hosts_in(text) - vouchers.hosts - LOOPBACK)
    if not unknown:
        return []
    return ["hosts: names URL hosts that appear in none of the plugin's manifest, command, agent, hook, .mcp.json or "
            "script files: " + ", ".join(unknown[:8])]


def check(meta: dict, text: str, original: dict | None, vouchers: Vouchers | None) -> list[str]:
    """Every safety reason for a candidate (frontmatter already parsed as `meta`). Hosts are checked only
    when `vouchers` is given; without them no upload command is vouched for."""
    reasons = allowed_tools_rules(meta, original)
    reasons += credential_rules(text)
    reasons += exfiltration_rules(text, vouchers or Vouchers())
    if vouchers is not None:
        reasons += host_rules(text, vouchers)
    return reasons


def unsafe_line(line: str, vouchers: Vouchers) -> bool:
    """For the offline writer: a copied line it must leave out."""
    return bool(CREDENTIALS.search(line) or INJECTION.search(line)
                or (EXFILTRATION.search(line) and not vouchers.vouches(line))
                or hosts_in(line) - vouchers.hosts - LOOPBACK)
