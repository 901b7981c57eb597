import shutil

import pytest

from skillbuild import build
from skillbuild.discovery import discover, plugin_context
from skillbuild.providers.offline import OfflineProvider
from skillbuild.skill import references
from skillbuild.skill.validation import check_skill
from tests.conftest import copy_examples


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("m") / "m"
    copy_examples(root)
    return discover(root)


@pytest.mark.parametrize("key", ["deploy-checker", "secret-sentry", "changelog-lint"])
def test_offline_output_passes_schema_and_gates(market, key):
    plugin = {p.key: p for p in market.plugins}[key]
    context = plugin_context(plugin, 24_000, 120_000)
    provider = OfflineProvider()
    analysis = provider.analyse(context, "prompt").value
    assert build.schema_errors(analysis) == []
    assert {c["name"] for c in analysis["commands"]} == set(plugin.commands)
    text = provider.generate(context, analysis, "prompt").value
    assert check_skill(text, key, min_bytes=500, max_bytes=14000, max_body_lines=500,
                       commands=plugin.commands, agents=plugin.agents) == []
    assert provider.generate(context, analysis, "prompt").value == text  # deterministic
    for command in plugin.commands:
        assert f"/{command}" in text


def test_readme_lines_naming_unknown_commands_are_dropped(market, tmp_path):
    plugin = {p.key: p for p in market.plugins}["changelog-lint"]
    readme = plugin.path / "README.md"
    readme.write_text(readme.read_text() + "\n## More\n\nThen run /publish-everything to finish.\nKeep it tidy.\n")
    context = plugin_context(plugin, 24_000, 120_000)
    provider = OfflineProvider()
    result = provider.generate(context, provider.analyse(context, "p").value, "p")
    text = references.join(result.value, result.files)  # the README's other sections land in references/
    assert "/publish-everything" not in text and "Keep it tidy." in text


def test_schema_rejects_bad_analysis():
    assert build.schema_errors({"plugin": "x"})
    assert any("quality_before" in e for e in build.schema_errors({
        "plugin": "x", "skill_name": "x", "summary": "s", "description": "d", "commands": [], "agents": [],
        "hooks": [], "mcp_servers": [], "triggers": [], "gaps": [], "sections": [], "resources": [],
        "quality_before": 101, "quality_after_estimate": 5}))
