"""The common `.gitignore` pattern rules, so the search for untracked plugins skips what git ignores."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negated: bool  # `!pattern`: re-include what an earlier pattern ignored
    dirs_only: bool  # `pattern/`: matches folders only


@dataclass
class Ignores:
    """Rules of every `.gitignore` read so far, by the folder (relative, posix, "" for the root) holding it."""

    by_base: dict[str, list[Rule]] = field(default_factory=dict)

    def read(self, base: str, folder: Path) -> None:
        """Load `folder/.gitignore` (if any) as the rules of `base`."""
        path = folder / ".gitignore"
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            self.by_base[base] = [rule for line in text.splitlines() if (rule := parse_line(line))]

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether git would ignore `rel` (relative to the root). Deeper files win; in a file, the last match."""
        verdict = False
        for base in _ancestors(rel):
            local = rel[len(base) + 1:] if base else rel
            for rule in self.by_base.get(base, ()):
                if (is_dir or not rule.dirs_only) and rule.regex.fullmatch(local):
                    verdict = not rule.negated
        return verdict


def _ancestors(rel: str) -> list[str]:
    """"" then each folder above `rel`, outermost first: the order in which their .gitignore files apply."""
    parts = rel.split("/")[:-1]
    return [""] + ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def parse_line(line: str) -> Rule | None:
    """One pattern line; None for blanks and comments."""
    line = _strip_trailing_spaces(line)
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    elif line.startswith(("\\#", "\\!")):
        line = line[1:]
    dirs_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    # A slash at the start or in the middle anchors the pattern to its .gitignore's folder;
    # otherwise it matches at any depth below it.
    anchored = "/" in line
    line = line.lstrip("/")
    if not anchored and not line.startswith("**/"):
        line = "**/" + line
    return Rule(re.compile(translate(line)), negated, dirs_only)


def _strip_trailing_spaces(line: str) -> str:
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        return stripped[:-1] + " "  # an escaped trailing space is kept
    return stripped


def translate(pattern: str) -> str:
    """Regex for a gitignore glob: `*` and `?` stop at `/`; `**/`, `/**` and `/**/` cross folders."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i) and i + 2 == n and (i == 0 or pattern[i - 1] == "/"):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = _class_end(pattern, i)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        elif pattern[i] == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the bracket expression at `start`, or -1."""
    i = start + 1
    if i < len(pattern) and pattern[i] in "!^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    end = pattern.find("]", i)
    return end
