"""Trigger routing across a marketplace: do a plugin's own trigger phrases pick its description among all others?

Claude Code chooses a skill from the descriptions alone, so with hundreds of plugins the descriptions compete.
Every description of the marketplace is indexed with BM25 (`bm25s`); each plugin's trigger phrases (from its
analysis) are the queries. Because phrases and descriptions come from the same analysis, the score is a lower
bound on trouble, not proof of good routing: a maintainer's eval file (`evals/triggers.jsonl`, lines
`{"query": ..., "plugin": name-or-null}`) is scored apart when present.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

EVALS_FILE = Path("evals") / "triggers.jsonl"


@dataclass(frozen=True)
class Accuracy:
    top1: int
    top3: int
    total: int

    def rate(self, hits: int) -> float:
        return hits / self.total if self.total else 0.0


@dataclass
class RoutingReport:
    queries: Accuracy
    misrouted: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # plugin -> [(query, landed on)]
    confusable: list[tuple[str, str, int]] = field(default_factory=list)  # (a, b, queries that swap them)
    evals: Accuracy | None = None
    eval_misses: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (query, want, got)
    over_limit: list[tuple[str, int]] = field(default_factory=list)  # descriptions cut by Claude Code
    listing_chars: int = 0
    listing_budget: int = 0

    def summary(self) -> str:
        q = self.queries
        return (f"routing: top-1 {q.rate(q.top1):.2f} ({q.top1}/{q.total}), "
                f"top-3 {q.rate(q.top3):.2f} ({q.top3}/{q.total})")

    def evals_summary(self) -> str | None:
        if self.evals is None:
            return None
        return f"evals: top-1 {self.evals.rate(self.evals.top1):.2f} ({self.evals.top1}/{self.evals.total})"


_SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ies", "ers", "er", "ed", "es", "s")


def stem(words: list[str]) -> list[str]:
    """A light suffix stripper ("deployments", "deploying" -> "deploy"), enough for users' phrasings to meet
    the descriptions' words; no stemming package needed."""
    out = []
    for word in words:
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 4:
                word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
                break
        out.append(word)
    return out


class Router:
    """A BM25 index over the marketplace's descriptions."""

    def __init__(self, descriptions: dict[str, str]):
        import bm25s  # deferred: numpy and scipy load only for `doit routing`

        self._bm25s = bm25s
        self.keys = list(descriptions)
        self.index = bm25s.BM25()
        tokens = bm25s.tokenize([descriptions[k] for k in self.keys], stopwords="en", stemmer=stem,
                                show_progress=False)
        self.index.index(tokens, show_progress=False)

    def rank(self, query: str, k: int = 3) -> list[tuple[str, float]]:
        """The k best plugins for `query`, with their scores; plugins that share no term score 0."""
        tokens = self._bm25s.tokenize([query], stopwords="en", stemmer=stem, show_progress=False)
        if not tokens.vocab:
            return []
        k = min(k, len(self.keys))
        docs, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [(self.keys[int(d)], float(s)) for d, s in zip(docs[0], scores[0])]


def _hits(router: Router, want: str, query: str) -> tuple[bool, bool, str | None]:
    ranked = [key for key, score in router.rank(query) if score > 0]
    top = ranked[0] if ranked else None
    return top == want, want in ranked[:3], top


def route(descriptions: dict[str, str], triggers: dict[str, list[str]], *, evals: list[dict] | None = None,
          description_limit: int = 1536, listing_budget: int = 8000, worst: int = 5) -> RoutingReport:
    """Score every plugin's trigger phrases against all descriptions, and the eval file's queries if given."""
    router = Router(descriptions)
    top1 = top3 = total = 0
    misrouted: dict[str, list[tuple[str, str]]] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    for key, phrases in triggers.items():
        for phrase in phrases:
            first, within, top = _hits(router, key, phrase)
            total += 1
            top1 += first
            top3 += within
            if not first:
                misrouted.setdefault(key, []).append((phrase, top or "(nothing)"))
                if top is not None:
                    pairs[tuple(sorted((key, top)))] += 1
    report = RoutingReport(Accuracy(top1, top3, total), misrouted,
                           [(a, b, n) for (a, b), n in pairs.most_common(worst)])
    report.over_limit = sorted(((k, len(d)) for k, d in descriptions.items() if len(d) > description_limit),
                               key=lambda item: -item[1])
    report.listing_chars = sum(len(k) + len(d) for k, d in descriptions.items())
    report.listing_budget = listing_budget
    if evals is not None:
        report.evals, report.eval_misses = _score_evals(router, evals)
    return report


def _score_evals(router: Router, evals: list[dict]) -> tuple[Accuracy, list[tuple[str, str | None, str | None]]]:
    """A labelled query passes when its best match is the labelled plugin; `null` means no plugin should match."""
    top1 = top3 = 0
    misses = []
    for case in evals:
        want = case.get("plugin")
        if want is None:
            ranked = [key for key, score in router.rank(case["query"]) if score > 0]
            ok = not ranked
            top1 += ok
            top3 += ok
            if not ok:
                misses.append((case["query"], None, ranked[0]))
            continue
        first, within, top = _hits(router, want, case["query"])
        top1 += first
        top3 += within
        if not first:
            misses.append((case["query"], want, top))
    return Accuracy(top1, top3, len(evals)), misses


def read_evals(marketplace: Path) -> list[dict] | None:
    """The maintainer's labelled queries, or None when the marketplace has no eval file.

    Raises ValueError naming the file and line of a malformed entry."""
    path = Path(marketplace) / EVALS_FILE
    if not path.is_file():
        return None
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg}); each line is "
                             '{"query": "...", "plugin": "name-or-null"}') from None
        if not isinstance(case, dict) or not isinstance(case.get("query"), str) or \
                not (case.get("plugin") is None or isinstance(case.get("plugin"), str)):
            raise ValueError(f'{path}:{number}: expected {{"query": "...", "plugin": "name-or-null"}}')
        cases.append(case)
    return cases


def report_lines(report: RoutingReport) -> list[str]:
    """What `doit routing` prints: details first, the summary line(s) last."""
    lines = []
    for key, misses in sorted(report.misrouted.items()):
        shown = "; ".join(f"{q!r} -> {landed}" for q, landed in misses[:3])
        lines.append(f"  {key}: {len(misses)} phrase(s) land elsewhere: {shown}")
    if report.confusable:
        lines.append("most confusable pairs:")
        lines += [f"  {a} <-> {b}: {n} phrase(s)" for a, b, n in report.confusable]
    for query, want, got in report.eval_misses[:20]:
        lines.append(f"  eval miss: {query!r} wants {want or 'no plugin'}, got {got or 'no plugin'}")
    for key, chars in report.over_limit:
        lines.append(f"  {key}: description of {chars} characters is cut by Claude Code")
    state = "over" if report.listing_chars > report.listing_budget else "within"
    lines.append(f"listing: {report.listing_chars:,} characters of names and descriptions, {state} the budget of "
                 f"{report.listing_budget:,}")
    lines.append(report.summary())
    if report.evals_summary():
        lines.append(report.evals_summary())
    return lines
