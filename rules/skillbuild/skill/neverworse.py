"""The never-worse gate: a candidate may replace a hand-written SKILL.md only if it keeps what that file held.

"Distinctive" trigger terms of the original description are its quoted phrases, and its words of three
or more letters that are neither English stopwords nor the boilerplate every skill description uses
("skill", "use", "user", "asks", "plugin", ...). The candidate must keep every one in its description
(a word counts when a word of the candidate starts with its stem: "playgrounds" is kept by "playground"),
hold at least as many body bytes as the original (reference files it writes count with its body), and
keep every link and every slash command of the original that still leads somewhere.
"""
from __future__ import annotations

import re
from pathlib import Path

from skillbuild.skill import skillmd, validation

DESCRIPTION_LIMIT = 1024  # the spec's limit: a longer original cannot be kept whole in the description
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either else etc even ever every few for
from further had has have having he her here hers him his how however i if in into is it its itself just
like may me might more most much must my neither no nor not now of off on once one only or other our ours
out over own per same she should so some such than that the their theirs them then there these they this
those through thus to too under until up upon us very via was we were what whatever when whenever where
whether which while who whom whose why will with within without would yet you your yours
""".split())
GENERIC = frozenset("""
activate activates agent agents ask asked asking asks assist assists claude code command commands context
help helps helping instead invoke invoked involve involves involving mention mentioned mentions need needs plugin
plugins related relevant request requested requests said say says skill skills something task tasks
trigger triggers use used uses using user users want wants way work works working
""".split())
WORD = re.compile(r"[a-z0-9][a-z0-9+#_-]*[a-z0-9+#]")
QUOTED = re.compile(r'"([^"\n]{3,120})"|\u201c([^\u201d\n]{3,120})\u201d|(?<![\w])\'([^\'\n]{3,120})\'(?![\w])')
MD_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
BARE_URL = re.compile(r"https?://[^\s)<>\]\"'`]+")


def description_of(text: str) -> str:
    """The frontmatter description, read strictly when it parses, loosely (`description:` line) otherwise."""
    try:
        meta, _ = skillmd.parse(text)
        value = meta.get("description")
        return value if isinstance(value, str) else ""
    except skillmd.FrontmatterError:
        match = re.search(r"(?m)^description:\s*(.+)$", text)
        return match.group(1).strip().strip("\"'") if match else ""


def body_of(text: str) -> str:
    try:
        return skillmd.split(text)[1]
    except skillmd.FrontmatterError:
        return text


def distinctive_terms(description: str) -> tuple[list[str], list[str]]:
    """(quoted phrases, distinctive words) of a description, in order of appearance, without repeats."""
    phrases = [" ".join(next(g for g in m.groups() if g).split()) for m in QUOTED.finditer(description)]
    words = [w for w in WORD.findall(description.lower()) if len(w) >= 3 and w not in STOPWORDS
             and w not in GENERIC and not w.isdigit()]
    return list(dict.fromkeys(phrases)), list(dict.fromkeys(words))


def missing_terms(original: str, candidate: str) -> list[str]:
    """The original description's distinctive terms the candidate dropped (quoted phrases quoted)."""
    phrases, words = distinctive_terms(description_of(original))
    if len(description_of(original)) > DESCRIPTION_LIMIT:
        where = candidate.lower()
    else:
        where = description_of(candidate).lower()
    flat = " ".join(where.split())
    lost = [f'"{p}"' for p in phrases if " ".join(p.lower().split()) not in flat]
    lost += [w for w in words if not re.search(r"(?<![a-z0-9])" + re.escape(_stem(w)), flat)]
    return lost


def _stem(word: str) -> str:
    """A word without its plural or verb ending, so "playgrounds" is kept by "playground"."""
    for ending in ("ing", "es", "ed", "s"):
        if word.endswith(ending) and len(word) - len(ending) >= 4:
            return word[: -len(ending)]
    return word


def links(body: str) -> list[str]:
    """Link targets of a body: Markdown links and bare URLs, page anchors left out."""
    found = [m.group(1) for m in MD_LINK.finditer(body)]
    found += [u.rstrip(".,;:!?") for u in BARE_URL.findall(body)]
    return [t for t in dict.fromkeys(found) if not t.startswith("#")]


def _leads_somewhere(target: str, folder: Path | None) -> bool:
    """A URL always counts; a relative link counts when its file exists from the SKILL.md's folder."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
        return True
    if folder is None:
        return True
    return (folder / target.split("#", 1)[0]).exists()


def check(original: str, candidate: str, *, commands: set[str] | frozenset[str] = frozenset(),
          folder: Path | None = None, reference_bytes: int = 0) -> list[str]:
    """Every way `candidate` holds less than the hand-written `original`; [] when it is never worse.

    `commands` are the plugin's own slash commands (an original's mention of another command is not
    kept: the reference gate would reject it); `folder` is where both files live, for relative links.
    """
    reasons = []
    lost = missing_terms(original, candidate)
    if lost:
        reasons.append("never-worse: the description drops the hand-written original's trigger terms: "
                       + ", ".join(lost))
    old_body, new_body = body_of(original).strip(), body_of(candidate).strip()
    old_size, new_size = len(old_body.encode("utf-8")), len(new_body.encode("utf-8")) + reference_bytes
    if new_size < old_size:
        reasons.append(f"never-worse: the body holds {new_size} bytes, less than the hand-written original's "
                       f"{old_size}")
    gone = [t for t in links(old_body) if _leads_somewhere(t, folder) and t not in new_body]
    if gone:
        reasons.append("never-worse: links of the hand-written original are gone: " + ", ".join(gone))
    kept = validation.mentioned_commands(new_body)
    dropped = sorted((validation.mentioned_commands(old_body) & set(commands)) - kept)
    if dropped:
        reasons.append("never-worse: slash commands of the hand-written original are gone: "
                       + ", ".join("/" + c for c in dropped))
    return reasons
