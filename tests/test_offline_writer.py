"""The offline writer's sections: triggers users would say, every command and agent, a condensed README,
other skills linked, detail in references/, nothing empty, nothing padded, no name cut mid-word."""
from __future__ import annotations

import re

from skillbuild.providers.base import InputFile, PluginContext
from skillbuild.providers.offline import OfflineProvider, display_name, heading_text, shorten
from skillbuild.skill import markdown, references, skillmd, validation

LONG = ("Scans every configuration file of the repository for drifted settings, compares them with the baseline "
        "recorded at the last release, and reports each difference with the file, the key and the expected value")
README = """# 🚀 Drift Guard

Drift Guard keeps configuration honest.

## ✨ Features

- **Baseline snapshots** - record the settings of a release
- **Drift reports** - see every changed key with its file

## 📦 Installation

```bash
pip install drift-guard
```

## 🛠️ Usage

Run `/drift-scan` in the repository, then read the report.

## Troubleshooting

If the baseline is missing, run `/drift-baseline` first.

## License

MIT
"""
OTHER_SKILL = """---
name: drift-basics
description: |
  Explains configuration drift and how to read a drift report.
---

## When to Use This Skill

- Explain why a setting drifted
- Read a drift report line by line
"""


def plugin(files: dict[str, str], **manifest) -> PluginContext:
    commands = tuple(r[len("commands/"):-3] for r in files if r.startswith("commands/"))
    agents = tuple(r[len("agents/"):-3] for r in files if r.startswith("agents/"))
    return PluginContext(name="drift-guard", skill_name="drift-guard",
                         manifest={"name": "drift-guard", "description": "Detects configuration drift.",
                                   **manifest},
                         files=tuple(InputFile(rel, text) for rel, text in files.items()),
                         commands=commands, agents=agents)


FILES = {
    "README.md": README,
    "commands/drift-scan.md": f"---\ndescription: {LONG}\n---\n\n# Scan\n\nRun it at the repository root.\n",
    "commands/drift-baseline.md": "---\ndescription: Record the current settings as the baseline\n---\n\nWrites .drift.\n",
    "agents/drift-reviewer.md": "---\ndescription: Reviews a drift report and proposes fixes\n---\n\nYou review reports.\n",
    "skills/drift-basics/SKILL.md": OTHER_SKILL,
}


def write(context: PluginContext):
    provider = OfflineProvider()
    analysis = provider.analyse(context, "p").value
    return analysis, provider.generate(context, analysis, "p")


def test_every_section_has_content_and_the_result_passes_the_gates(tmp_path):
    context = plugin(FILES, keywords=["drift", "configuration"])
    _, result = write(context)
    assert markdown.empty_sections(result.value) == []
    assert all(markdown.empty_sections(text) == [] for text in result.files.values())
    folder = tmp_path / "skills" / "drift-guard"
    (tmp_path / "skills" / "drift-basics").mkdir(parents=True)
    (tmp_path / "skills" / "drift-basics" / "SKILL.md").write_text(OTHER_SKILL)
    assert validation.check_skill(result.value, "drift-guard", min_bytes=300, max_bytes=14000, max_body_lines=500,
                                  commands=context.commands, agents=context.agents, skill_dir=folder,
                                  max_body_tokens=5000, pending=sorted(result.files)) == []
    for rel, text in result.files.items():
        assert validation.check_reference(rel, text, max_bytes=40000, commands=context.commands,
                                          agents=context.agents, skill_dir=folder, pending=sorted(result.files)) == []


def test_triggers_are_what_users_would_say_never_work_with():
    analysis, result = write(plugin(FILES, keywords=["drift", "configuration"]))
    when = result.value.split("## When to use this skill", 1)[1].split("\n## ", 1)[0]
    assert "Work with" not in result.value
    assert "- Record the current settings as the baseline" in when  # a command's description
    assert "- Reviews a drift report and proposes fixes" in when  # an agent's description
    assert "- Drift reports - see every changed key with its file" in when  # a README feature line
    assert "- Read a drift report line by line" in when  # another skill's use line
    assert "- Requests about drift or configuration" in when  # keywords phrased as a request
    assert analysis["triggers"] and not any(t.lower().startswith("work with") for t in analysis["triggers"])


def test_every_command_and_agent_is_listed_with_its_own_description():
    _, result = write(plugin(FILES))
    body = result.value
    assert "- `/drift-baseline`: Record the current settings as the baseline" in body
    assert "- `drift-reviewer` agent: Reviews a drift report and proposes fixes" in body
    scan = next(line for line in body.splitlines() if line.startswith("- `/drift-scan`"))
    assert scan.endswith("…") and LONG.startswith(scan[len("- `/drift-scan`: "):-1])  # cut at a word boundary
    commands = result.files["references/commands.md"]
    assert "## /drift-scan" in commands and LONG in commands and "Run it at the repository root." in commands
    assert "## drift-reviewer" in result.files["references/agents.md"]


def test_description_says_what_and_when_in_the_plugins_own_terms():
    analysis, _ = write(plugin(FILES, keywords=["drift", "configuration"]))
    description = analysis["description"]
    assert description.startswith("Detects configuration drift.")
    assert "Use when the user wants to" in description and "record the current settings" in description
    assert "/drift-scan" in description and "/drift-baseline" in description and "drift-reviewer" in description
    assert "Use when the task involves" not in description


def test_display_name_comes_from_the_manifest_or_the_readme_title_without_emoji():
    assert display_name(plugin(FILES), README) == "Drift Guard"
    assert display_name(plugin(FILES, displayName="DriftGuard Pro"), README) == "DriftGuard Pro"
    assert display_name(plugin({}), "") == "drift-guard"  # never title-cased from the folder
    assert heading_text("📦 **Installation**") == "Installation"


def test_readme_is_condensed_and_its_headings_normalized():
    _, result = write(plugin(FILES))
    body = result.value
    assert "## Workflow" in body and "Run `/drift-scan` in the repository" in body
    assert "Drift Guard keeps configuration honest." not in body  # the title's intro: the summary says it
    assert "## License" not in body and "MIT\n" not in "".join(result.files.values())
    setup = result.files["references/setup.md"]
    assert "## Installation" in setup and "pip install drift-guard" in setup and "## Troubleshooting" in setup
    assert not re.search(r"(?m)^#+ .*[🚀✨📦🛠]", references.join(body, result.files))


def test_other_skills_are_linked_not_pasted():
    _, result = write(plugin(FILES))
    assert "[drift-basics](../drift-basics/SKILL.md): Explains configuration drift" in result.value
    assert "Explain why a setting drifted" not in references.join("", result.files)


def test_reference_files_are_linked_one_level_deep_with_when_to_read_them():
    _, result = write(plugin(FILES))
    for rel in result.files:
        assert re.search(rf"- \[{rel}\]\({rel}\): read ", result.value)
        assert references.NAME.match(rel)


def test_a_plugin_with_little_to_say_gets_a_short_skill_never_padding():
    _, result = write(plugin({"commands/ping.md": "---\ndescription: Ping the service\n---\n"}))
    _, body = skillmd.split(result.value)
    assert "`/ping`: Ping the service" in body
    assert len(body.encode()) < 400 and result.files == {}
    assert "## Workflow" not in body and "## Reference files" not in body  # nothing to say: left out


def test_shorten_never_cuts_a_word():
    assert shorten("alpha beta gamma", 100) == "alpha beta gamma"
    assert shorten("alpha beta gamma delta", 12) == "alpha beta…"
    assert shorten("One sentence here. Another one follows after it.", 30) == "One sentence here."


def test_a_long_command_list_names_every_command_and_moves_descriptions_to_references():
    files = {f"commands/task-{n:03d}.md": f"---\ndescription: Runs maintenance task number {n} on the fleet\n---\n"
             for n in range(120)}
    _, result = write(plugin(files))
    _, body = skillmd.split(result.value)
    assert all(f"`/task-{n:03d}`" in body for n in range(120))
    assert len(body.encode()) // 4 < 5000 and len(body.splitlines()) < 500
    commands = result.files["references/commands.md"]
    assert all(f"## /task-{n:03d}\n\nRuns maintenance task number {n} on the fleet" in commands for n in range(120))
