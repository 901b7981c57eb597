"""The quality score of a SKILL.md (0-100): measurable checks, each worth stated points (docs/quality.md).

`score` judges one file; `score_all` judges every written SKILL.md of a marketplace, since trigger terms are
specific only against the other plugins' descriptions. A file with an empty section, a broken link, a
placeholder or a command or agent left out scores at most CAP, whatever else it has.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from skillbuild.skill import markdown, skillmd, validation
from skillbuild.skill.routing import stem

CAP = 60  # the most a file with a hard fault can score
TOKEN_BUDGET = 5000  # Agent Skills guidance: the body is loaded whole, keep it under ~5,000 tokens
SHORT_BODY_TOKENS = 2500  # a body this short holds no detail that belongs in references/
SPECIFIC_WANTED = 4  # specific terms a description needs for full points
RARE_SHARE = 0.1  # a term is specific when at most this share of the marketplace's descriptions hold it

# (check, points): the rubric, in the order `doit lint` reports it.
RUBRIC = (("description", 10), ("specific terms", 15), ("sections", 15), ("coverage", 15), ("links", 10),
          ("placeholders", 5), ("size", 10), ("references", 10), ("duplication", 10))
TEMPLATE_SHARE = 0.3  # "when to use" bullets opening with the same two words: boilerplate past this share

WHEN = re.compile(r"\b(?:when(?:ever)?|use (?:it |this (?:skill |plugin )?)?(?:for|to|in|on)|if (?:the user|you))\b",
                  re.IGNORECASE)
WORD = re.compile(r"[a-z][a-z0-9]+(?:[-_][a-z0-9]+)*")
# Words every description may hold: they never make one plugin's description stand out.
STOPWORDS = frozenset(
    "a an and are as at be by can for from has have how in into is it its of on or that the their this to "
    "use used uses using when whenever with without you your via any all also after before user users "
    "plugin plugins skill skills claude code task tasks help helps work works".split())


@dataclass
class Score:
    key: str
    points: int
    costs: list[tuple[str, int, str]] = field(default_factory=list)  # (check, points lost, why)
    capped: list[str] = field(default_factory=list)  # the hard faults that hold it at CAP

    def line(self) -> str:
        lost = "; ".join(f"-{n} {check}: {why}" for check, n, why in self.costs if n)
        cap = f" (at most {CAP}: {', '.join(self.capped)})" if self.capped else ""
        return f"{self.key}: {self.points}{cap}" + (f"  {lost}" if lost else "")


@dataclass(frozen=True)
class Skill:
    """One SKILL.md and what it is judged against."""
    key: str
    path: Path
    text: str
    commands: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    @property
    def references(self) -> list[Path]:
        folder = self.path.parent / "references"
        return sorted(folder.glob("*.md")) if folder.is_dir() else []

    @property
    def siblings(self) -> list[Path]:
        """The plugin's other skills (`skills/*/SKILL.md` beside this one's folder)."""
        return [p for p in sorted(self.path.parent.parent.glob("*/SKILL.md")) if p.resolve() != self.path.resolve()]


def terms(text: str) -> set[str]:
    """The stemmed content words of a description."""
    words = [w for w in WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2]
    return set(stem(words)) - STOPWORDS  # "working" stems to "work", a word every description may hold


def document_frequency(descriptions: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in descriptions:
        counts.update(terms(text))
    return counts


def parts(text: str) -> tuple[str, str, bool]:
    """(description, body, frontmatter parsed); a file whose frontmatter does not parse has no description."""
    try:
        meta, body = skillmd.parse(text)
    except skillmd.FrontmatterError:
        try:
            return "", skillmd.split(text)[1], False
        except skillmd.FrontmatterError:
            return "", text, False
    description = meta.get("description")
    return (description if isinstance(description, str) else ""), body, True


# --- the checks: each returns (points lost, why) ----------------------------------------------------------

def check_description(description: str, parsed: bool) -> tuple[int, str]:
    if not parsed:
        return 10, "the frontmatter does not parse"
    when = WHEN.search(description)
    what = WHEN.split(description)[0] if when else description
    lost, why = 0, []
    if len(what.split()) < 5:
        lost, why = lost + 5, why + ["does not say what the plugin does"]
    if not when:
        lost, why = lost + 5, why + ["does not say when to use it"]
    return lost, "; ".join(why)


def check_specific(description: str, body: str, df: Counter[str], total: int) -> tuple[int, str]:
    """10 points: description terms held by at most RARE_SHARE of the marketplace's descriptions (at least one:
    its own); 5 points: "when to use" bullets that are not one template ("Work with X", "Work with Y")."""
    limit = max(1, int(total * RARE_SHARE))
    specific = sorted(t for t in terms(description) if df.get(t, 1) <= limit)
    lost, why = 0, []
    if len(specific) < SPECIFIC_WANTED:
        lost = round(10 * (SPECIFIC_WANTED - len(specific)) / SPECIFIC_WANTED)
        why.append(f"{len(specific)} description term(s) specific to this plugin (want {SPECIFIC_WANTED}): "
                   + (", ".join(specific) or "none"))
    template, count, bullets = templated_triggers(body)
    if template:
        lost += 5
        why.append(f"{count} of {bullets} 'when to use' bullets are one template ('{template} ...')")
    return lost, "; ".join(why)


def when_to_use(body: str) -> list[str]:
    """The bullets of the body's "when to use" section(s)."""
    lines = body.splitlines()
    marks = markdown.headings(body)
    bullets = []
    for i, (index, level, line) in enumerate(marks):
        if re.search(r"when to use|use (?:this|it) when", line, re.I):
            end = next((j for j, lv, _ in marks[i + 1:] if lv <= level), len(lines))
            bullets += [x.strip()[2:].strip() for x in lines[index + 1:end] if re.match(r"\s*[-*+]\s", x)]
    return bullets


def templated_triggers(body: str) -> tuple[str, int, int]:
    """(opening, how many, of how many) when at least three "when to use" bullets and more than TEMPLATE_SHARE
    of them open with the same two words; ("", 0, n) otherwise."""
    bullets = when_to_use(body)
    openings = Counter(" ".join(b.lower().split()[:2]) for b in bullets if len(b.split()) >= 2)
    if not openings:
        return "", 0, len(bullets)
    opening, count = openings.most_common(1)[0]
    if count >= 3 and count > TEMPLATE_SHARE * len(bullets):
        return opening, count, len(bullets)
    return "", 0, len(bullets)


def required_sections(skill: Skill) -> list[tuple[str, re.Pattern]]:
    wanted = [("when to use", re.compile(r"when to use|use (?:this|it) when|when\b", re.I))]
    if skill.commands:
        wanted.append(("commands", re.compile(r"command", re.I)))
    if skill.agents:
        wanted.append(("agents", re.compile(r"agent", re.I)))
    return wanted


def check_sections(skill: Skill, body: str) -> tuple[int, str, list[str]]:
    """Required sections present (an overview before the first `##`, when to use, commands and agents when the
    plugin has them); an empty section anywhere is a hard fault."""
    titles = [line.lstrip("#").strip() for _, level, line in markdown.headings(body) if level >= 2]
    before_first = re.split(r"^##\s", body, maxsplit=1, flags=re.M)[0]
    overview = any(line.strip() and not line.lstrip().startswith("#") for line in before_first.splitlines()) \
        or any(re.search(r"overview|about", t, re.I) for t in titles)
    wanted = [("overview", overview)] + [(name, any(p.search(t) for t in titles))
                                         for name, p in required_sections(skill)]
    missing = [name for name, found in wanted if not found]
    empty = markdown.empty_sections(body)
    lost = round(15 * len(missing) / len(wanted))
    why = [f"missing: {', '.join(missing)}"] if missing else []
    why += [f"empty: {', '.join(empty[:3])}"] if empty else []
    if empty:
        lost = max(lost, 5)
    return lost, "; ".join(why), (["an empty section"] if empty else [])


def covered_commands(texts: list[str]) -> set[str]:
    names = set()
    for text in texts:
        names |= {token.rpartition(":")[2] for token in validation.mentioned_commands(text)}
    return names


def check_coverage(skill: Skill, body: str) -> tuple[int, str, list[str]]:
    """Every command (as `/name` or `/plugin:name`) and agent (by name) in the body or a references/ file."""
    texts = [body] + [p.read_text(encoding="utf-8", errors="replace") for p in skill.references]
    seen = covered_commands(texts)
    missing = [f"/{c}" for c in skill.commands if c not in seen]
    joined = "\n".join(texts).lower()
    missing += [a for a in skill.agents if not re.search(rf"(?<![\w-]){re.escape(a.lower())}(?![\w-])", joined)]
    wanted = len(skill.commands) + len(skill.agents)
    if not missing:
        return 0, "", []
    return max(1, round(15 * len(missing) / wanted)), f"not named: {', '.join(missing[:8])}", \
        ["a command or agent left out"]


def check_links(skill: Skill) -> tuple[int, str, list[str]]:
    broken = markdown.broken_links(skill.text, skill.path.parent)
    if not broken:
        return 0, "", []
    return 10, f"broken: {', '.join(broken[:3])}", ["a broken link"]


def check_placeholders(skill: Skill) -> tuple[int, str, list[str]]:
    found = markdown.placeholders(skill.text)
    if not found:
        return 0, "", []
    return 5, ", ".join(found[:3]), ["a placeholder"]


def tokens(text: str) -> int:
    """Estimated tokens: bytes / 4."""
    return len(text.encode("utf-8")) // 4


def check_size(skill: Skill, body: str, max_bytes: int, max_body_lines: int) -> tuple[int, str]:
    size, lines, estimate = len(skill.text.encode("utf-8")), len(body.splitlines()), tokens(body)
    lost, why = 0, []
    if size > max_bytes:
        lost, why = lost + 3, why + [f"{size:,} bytes (budget {max_bytes:,})"]
    if lines > max_body_lines:
        lost, why = lost + 3, why + [f"body of {lines} lines (budget {max_body_lines})"]
    if estimate > TOKEN_BUDGET:
        lost, why = lost + 4, why + [f"body of ~{estimate:,} tokens (budget {TOKEN_BUDGET:,})"]
    return lost, "; ".join(why)


def check_references(skill: Skill, body: str) -> tuple[int, str]:
    """Detail belongs in references/: a long body needs reference files, and each must be linked from it."""
    refs = skill.references
    linked = {path.split("/", 1)[-1] for _, _, path in markdown.relative_links(body) if path.startswith("references/")}
    unlinked = [p.name for p in refs if p.name not in linked]
    if unlinked:
        return 5, f"references/ not linked from the body: {', '.join(unlinked[:3])}"
    if tokens(body) > SHORT_BODY_TOKENS and not refs:
        return 10, f"body of ~{tokens(body):,} tokens and no references/ files to hold its detail"
    return 0, ""


def paragraphs(text: str) -> set[str]:
    """Normalized lines of prose long enough to be worth comparing (headings and code fences left out)."""
    out = set()
    for _, line in markdown.prose_lines(text):
        norm = " ".join(line.lower().split())
        if len(norm) >= 40 and not norm.startswith("#"):
            out.add(norm)
    return out


def check_duplication(skill: Skill, body: str) -> tuple[int, str]:
    """Lines of the body also found in another skill of the plugin, which Claude Code loads on its own."""
    mine = paragraphs(body)
    if not mine:
        return 0, ""
    theirs: set[str] = set()
    for path in skill.siblings:
        theirs |= paragraphs(path.read_text(encoding="utf-8", errors="replace"))
    shared = mine & theirs
    if not shared:
        return 0, ""
    share = len(shared) / len(mine)
    lost = min(10, max(1, round(10 * share * 4)))  # a quarter of the body repeated loses every point
    return lost, f"{len(shared)} line(s) ({share:.0%}) repeat the plugin's other skills"


def score(skill: Skill, df: Counter[str], total: int, *, max_bytes: int, max_body_lines: int) -> Score:
    """The file's score: 100 less what each check costs, held at CAP by any hard fault."""
    description, body, parsed = parts(skill.text)
    costs: dict[str, tuple[int, str]] = {}
    capped: list[str] = []
    costs["description"] = check_description(description, parsed)
    costs["specific terms"] = check_specific(description, body, df, total)
    for name, (lost, why, faults) in (("sections", check_sections(skill, body)),
                                      ("coverage", check_coverage(skill, body)),
                                      ("links", check_links(skill)),
                                      ("placeholders", check_placeholders(skill))):
        costs[name] = (lost, why)
        capped += faults
    costs["size"] = check_size(skill, body, max_bytes, max_body_lines)
    costs["references"] = check_references(skill, body)
    costs["duplication"] = check_duplication(skill, body)
    points = 100 - sum(lost for lost, _ in costs.values())
    if capped:
        points = min(points, CAP)
    ordered = [(name, costs[name][0], costs[name][1]) for name, _ in RUBRIC]
    return Score(skill.key, max(0, points), ordered, capped)


def score_all(skills: list[Skill], *, max_bytes: int, max_body_lines: int) -> list[Score]:
    """Every file scored against the marketplace's descriptions (document frequency of their terms)."""
    descriptions = [parts(s.text)[0] for s in skills]
    df = document_frequency(descriptions)
    return [score(s, df, len(skills), max_bytes=max_bytes, max_body_lines=max_body_lines) for s in skills]


def summary(scores: list[Score], threshold: int) -> str:
    """`quality: mean X, min Y, below threshold Z of N`."""
    if not scores:
        return "quality: mean -, min -, below threshold 0 of 0"
    values = [s.points for s in scores]
    below = sum(1 for v in values if v < threshold)
    return f"quality: mean {sum(values) / len(values):.1f}, min {min(values)}, below threshold {below} of {len(values)}"
