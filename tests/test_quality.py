"""The quality rubric (skill/quality.py): each check on its own, the cap, and the summary line."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from skillbuild.skill import quality

DESCRIPTION = ("Checks Kubernetes manifests and Helm charts for rollout risks before a deploy. Use when the user "
               "asks to validate a canary rollout, a helm upgrade or kubectl apply.")
BODY = """# Deploy checker

Checks manifests before they ship.

## When to use this skill

- Validate a canary rollout before promoting it
- Review a helm upgrade for breaking changes
- Check kubectl apply output for drift

## Commands

- `/check-deploy`: run every check on the current manifests.

## Agents

- `rollout-reviewer` agent: reviews a rollout plan.
"""


def write(folder: Path, body: str = BODY, description: str = DESCRIPTION, name: str = "deploy-checker") -> Path:
    path = folder / "skills" / name / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'---\nname: "{name}"\ndescription: "{description}"\n---\n\n{body}', encoding="utf-8")
    return path


def skill(path: Path, commands=("check-deploy",), agents=("rollout-reviewer",)) -> quality.Skill:
    return quality.Skill("deploy-checker", path, path.read_text(encoding="utf-8"), tuple(commands), tuple(agents))


def judge(one: quality.Skill, others: list[str] = ()) -> quality.Score:
    df = quality.document_frequency([quality.parts(one.text)[0], *others])
    return quality.score(one, df, 1 + len(others), max_bytes=14000, max_body_lines=500)


def cost(result: quality.Score, check: str) -> int:
    return next(n for name, n, _ in result.costs if name == check)


def test_rubric_adds_up_to_100_and_a_good_file_scores_it(tmp_path):
    assert sum(points for _, points in quality.RUBRIC) == 100
    result = judge(skill(write(tmp_path)))
    assert (result.points, result.capped) == (100, []), result.line()


def test_description_must_say_what_and_when():
    assert quality.check_description(DESCRIPTION, True) == (0, "")
    assert quality.check_description("Checks manifests for rollout risks before each deploy.", True) == \
        (5, "does not say when to use it")
    assert quality.check_description("Use when deploying.", True)[0] == 5
    assert quality.check_description("", False) == (10, "the frontmatter does not parse")


def test_specific_terms_are_rare_across_the_marketplace():
    common = "Helps with code tasks and files. Use when working on code, files and tasks."
    others = [f"Helps with code tasks and files for team {i}. Use when the user works on files." for i in range(20)]
    df = quality.document_frequency([common, *others])
    lost, why = quality.check_specific(common, "", df, 21)
    assert lost == 10 and "0 description term(s) specific" in why
    df = quality.document_frequency([DESCRIPTION, *others])
    assert quality.check_specific(DESCRIPTION, "", df, 21) == (0, "")


def test_templated_when_to_use_bullets_cost_points():
    body = "## When to use this skill\n\n- Work with security\n- Work with secrets\n- Work with joi\n- Scan a diff\n"
    assert quality.templated_triggers(body) == ("work with", 3, 4)
    lost, why = quality.check_specific(DESCRIPTION, body, quality.document_frequency([DESCRIPTION]), 1)
    assert lost == 5 and "3 of 4 'when to use' bullets are one template ('work with ...')" in why
    assert quality.templated_triggers(BODY) == ("", 0, 3)


def test_missing_section_costs_points_and_an_empty_one_caps(tmp_path):
    no_agents = BODY.split("## Agents")[0]
    result = judge(skill(write(tmp_path / "a", no_agents + "\nThe `rollout-reviewer` agent helps.\n")))
    assert cost(result, "sections") == 4 and result.capped == []  # 15 points over 4 required sections
    empty = BODY.replace("## Commands\n", "## Troubleshooting\n\n## Commands\n")
    result = judge(skill(write(tmp_path / "b", empty)))
    assert result.capped == ["an empty section"] and result.points <= quality.CAP


def test_every_command_and_agent_is_covered_references_count(tmp_path):
    path = write(tmp_path, BODY.replace("`/check-deploy`", "`check`"))
    result = judge(skill(path))
    assert "not named: /check-deploy" in dict((n, w) for n, _, w in result.costs)["coverage"]
    assert result.points <= quality.CAP and "a command or agent left out" in result.capped
    refs = path.parent / "references"
    refs.mkdir()
    (refs / "commands.md").write_text("# Commands\n\nRun `/check-deploy` first.\n")
    path.write_text(path.read_text() + "\nRead [the commands](references/commands.md) for details.\n")
    result = judge(skill(path))
    assert result.capped == [] and cost(result, "coverage") == 0


def test_broken_link_and_placeholder_cap_the_score(tmp_path):
    result = judge(skill(write(tmp_path / "a", BODY + "\nSee [setup](docs/setup.md).\n")))
    assert result.capped == ["a broken link"] and cost(result, "links") == 10 and result.points == quality.CAP
    result = judge(skill(write(tmp_path / "b", BODY + "\nTODO: explain the flags.\n")))
    assert result.capped == ["a placeholder"] and cost(result, "placeholders") == 5 and result.points == quality.CAP


def test_size_budgets(tmp_path):
    long = BODY + "\n".join(f"Line {i} of the rollout notes, with enough words." for i in range(600)) + "\n"
    result = judge(skill(write(tmp_path, long)))
    why = dict((n, w) for n, _, w in result.costs)["size"]
    assert cost(result, "size") == 10 and "body of" in why and "tokens (budget 5,000)" in why


def test_detail_belongs_in_references(tmp_path):
    long = BODY + "\n## Notes\n\n" + "\n".join(f"Note {i}: rollouts pause when probes fail." for i in range(300))
    path = write(tmp_path, long + "\n")
    assert quality.tokens(quality.parts(path.read_text())[1]) > quality.SHORT_BODY_TOKENS
    assert cost(judge(skill(path)), "references") == 10
    (path.parent / "references").mkdir()
    (path.parent / "references" / "notes.md").write_text("# Notes\n\nMore.\n")
    lost, why = quality.check_references(skill(path), quality.parts(path.read_text())[1])
    assert (lost, why) == (5, "references/ not linked from the body: notes.md")
    path.write_text(path.read_text() + "\nRead [notes](references/notes.md) when a rollout pauses.\n")
    assert cost(judge(skill(path)), "references") == 0


def test_text_repeated_from_another_skill_of_the_plugin(tmp_path):
    path = write(tmp_path)
    other = tmp_path / "skills" / "adapter" / "SKILL.md"
    other.parent.mkdir()
    other.write_text("---\nname: adapter\ndescription: x\n---\n\n- Validate a canary rollout before promoting it\n"
                     "- Review a helm upgrade for breaking changes\n")
    lost, why = quality.check_duplication(skill(path), quality.parts(path.read_text())[1])
    assert lost > 0 and why.startswith("2 line(s)")
    assert [p.name for p in skill(path).siblings] == ["SKILL.md"] and skill(path).siblings[0] == other


def test_summary_line():
    scores = [quality.Score("a", 95), quality.Score("b", 52), quality.Score("c", 71)]
    assert quality.summary(scores, 60) == "quality: mean 72.7, min 52, below threshold 1 of 3"
    assert quality.summary([], 60) == "quality: mean -, min -, below threshold 0 of 0"


def test_document_frequency_counts_descriptions_not_words():
    assert quality.document_frequency(["rollout rollout canary", "canary"]) == Counter({"canary": 2, "rollout": 1})
