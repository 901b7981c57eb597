import json
import os
import shutil
from pathlib import Path

import pytest

from skillbuild.discovery import DiscoveryError, discover, plugin_context, skill_name
from tests.conftest import copy_examples


@pytest.fixture
def mk(tmp_path):
    root = tmp_path / "m"
    copy_examples(root)
    return root


def by_key(market):
    return {p.key: p for p in market.plugins}


def test_examples_shapes(mk):
    plugins = by_key(discover(mk))
    assert plugins["deploy-checker"].tracked and plugins["deploy-checker"].state == "ok"
    assert plugins["changelog-lint"].tracked is False and plugins["changelog-lint"].state == "ok"
    assert plugins["release-notes"].manifest_path == mk / "plugins/docs/release-notes/plugin.json"
    assert plugins["remote-formatter"].state == "external"
    assert "github: example-org/remote-formatter" in plugins["remote-formatter"].reason
    sentry = plugins["secret-sentry"]
    rels = [sentry.relpath(p) for p in sentry.inputs]
    assert rels == [".claude-plugin/plugin.json", "README.md", "commands/scan-secrets.md",
                    "agents/secret-reviewer.md", "skills/skill-adapter/SKILL.md", ".mcp.json"]
    assert (".env.example", "secret-looking file: never read") in sentry.excluded
    assert sentry.commands == ["scan-secrets"] and sentry.agents == ["secret-reviewer"]
    assert sentry.target == mk / "plugins/security/secret-sentry/skills/secret-sentry/SKILL.md"
    assert plugins["deploy-checker"].scripts == ["scripts/preflight.sh"]


def test_untracked_can_be_turned_off(mk):
    plugins = by_key(discover(mk, build_untracked=False))
    assert plugins["changelog-lint"].state == "untracked"


def test_exclusions(mk, tmp_path):
    folder = mk / "plugins/devops/deploy-checker"
    (folder / "commands/big.md").write_text("x" * 300)
    (folder / "commands/blob.md").write_bytes(b"\x89PNG\x00\x00binary")
    (folder / "commands/latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    for name in ("id_rsa", "server.pem", "api.key", "credentials-prod.json", "my_secret.txt", ".env"):
        (folder / name).write_text("do-not-read-me")
    outside = tmp_path / "outside.md"
    outside.write_text("outside")
    os.symlink(outside, folder / "commands/escape.md")
    plugin = by_key(discover(mk, file_max_bytes=200))["deploy-checker"]
    excluded = dict(plugin.excluded)
    assert excluded["commands/big.md"].startswith("300 bytes, over the 200-byte cap")
    assert excluded["commands/blob.md"] == "binary or not UTF-8 text"
    assert excluded["commands/latin1.md"] == "binary or not UTF-8 text"
    assert excluded["commands/escape.md"] == "symlink leaving the plugin folder"
    for name in ("id_rsa", "server.pem", "api.key", "credentials-prod.json", "my_secret.txt", ".env"):
        assert excluded[name] == "secret-looking file: never read"
    text = "".join(f.text for f in plugin_context(plugin, 10_000, 100_000).files)
    assert "do-not-read-me" not in text and "outside" not in text


def test_target_is_never_its_own_input(mk):
    target = mk / "plugins/devops/deploy-checker/skills/deploy-checker/SKILL.md"
    target.parent.mkdir(parents=True)
    target.write_text("---\nname: deploy-checker\ndescription: x\n---\nbody\n")
    plugin = by_key(discover(mk))["deploy-checker"]
    assert target not in plugin.inputs


def test_source_escaping_root_is_rejected_naming_entry(mk):
    catalog = mk / ".claude-plugin/marketplace.json"
    data = json.loads(catalog.read_text())
    data["plugins"][0]["source"] = "../../etc"
    catalog.write_text(json.dumps(data))
    plugin = by_key(discover(mk))["deploy-checker"]
    assert plugin.state == "error"
    assert "catalog entry 'deploy-checker': source '../../etc' resolves outside the marketplace root" in plugin.reason


def test_malformed_manifest_names_file_line_column(mk):
    manifest = mk / "plugins/security/secret-sentry/.claude-plugin/plugin.json"
    manifest.write_text('{\n  "name": "secret-sentry",\n  "keywords": ["a",]\n}')
    plugins = by_key(discover(mk))
    assert plugins["secret-sentry"].state == "error"
    assert f"{manifest}: invalid JSON at line 3, column" in plugins["secret-sentry"].reason
    assert plugins["deploy-checker"].state == "ok"


def test_malformed_or_missing_catalog(mk, tmp_path):
    catalog = mk / ".claude-plugin/marketplace.json"
    catalog.write_text('{"name": "x",\n "plugins": [}')
    with pytest.raises(DiscoveryError, match=r"invalid JSON at line 2, column"):
        discover(mk)
    with pytest.raises(DiscoveryError, match="marketplace catalog not found"):
        discover(tmp_path / "nowhere")


def test_name_collisions_and_unusable_names(mk):
    catalog = mk / ".claude-plugin/marketplace.json"
    data = json.loads(catalog.read_text())
    data["plugins"][1]["name"] = "Deploy_Checker"  # normalises to deploy-checker
    data["plugins"].append({"name": "!!!", "source": "./plugins/extras/changelog-lint"})
    catalog.write_text(json.dumps(data))
    plugins = discover(mk).plugins
    clash = [p for p in plugins if p.name == "Deploy_Checker"][0]
    assert clash.state == "error" and "both become skill name 'deploy-checker'" in clash.reason
    assert clash.key != "deploy-checker"  # its own task key
    bad = [p for p in plugins if p.name == "!!!"][0]
    assert bad.state == "error" and "cannot become a valid skill name" in bad.reason
    assert len({p.key for p in plugins}) == len(plugins)


def test_skill_name_normalisation():
    assert skill_name("My Plugin_v2!") == "my-plugin-v2"
    assert skill_name("--a--b--") == "a-b"
    assert len(skill_name("x" * 100)) == 64
    assert skill_name("a" * 63 + "-b") == "a" * 63


def test_budgets_cut_in_priority_order(mk):
    plugin = by_key(discover(mk))["deploy-checker"]
    context = plugin_context(plugin, file_budget=300, total_budget=700)
    assert [f.rel for f in context.files][:2] == [".claude-plugin/plugin.json", "README.md"]
    assert sum(len(f.text.encode()) for f in context.files) <= 700
    assert any("README.md: cut from" in c for c in context.cut)
    assert any("left out, total budget" in c for c in context.cut)


def test_messy_marketplace_finds_plugins_not_folders():
    from tests.test_messy_discovery import FIXTURE

    market = discover(FIXTURE)
    found = {p.key: (p.rel, p.tracked, p.state) for p in market.plugins}
    assert found == {
        "log-tail": ("plugins/log-tail", True, "ok"),
        "db-kit": ("plugins/db-kit", True, "ok"),
        "db-kit-legacy": ("plugins/db-kit-legacy", True, "ok"),  # its manifest says "db-kit": the key is its own
        "empty-one": ("plugins/empty-one", True, "skipped"),
        "untracked-helper": ("plugins/untracked-helper", False, "ok"),
        "log-tail-2": ("plugins/log-tail-copy", False, "skipped"),
    }
    shadowed = by_key(market)["log-tail-2"]
    assert shadowed.reason.startswith("shadowed by catalog plugin 'log-tail' (plugins/log-tail)")
    assert by_key(market)["empty-one"].reason.startswith("empty plugin: only a manifest")
    with_templates = by_key(discover(FIXTURE, exclude=("backups", "tests")))
    assert with_templates["x-plugin"].rel == "templates/x-plugin"
    assert "wip-draft" not in with_templates and "scratch-copy" not in with_templates  # .gitignore still applies


def test_catalog_collisions_still_fail_and_shadowing_names_the_first(mk):
    copy = mk / "plugins/more/deploy-checker-old"
    shutil.copytree(mk / "plugins/devops/deploy-checker", copy)
    (copy / ".claude-plugin").mkdir(exist_ok=True)
    (copy / ".claude-plugin/plugin.json").write_text('{"name": "deploy-checker"}')
    catalog = mk / ".claude-plugin/marketplace.json"
    data = json.loads(catalog.read_text())
    data["plugins"].append({"name": "deploy-checker", "source": "./plugins/extras/changelog-lint"})
    catalog.write_text(json.dumps(data))
    plugins = discover(mk).plugins
    shadowed = [p for p in plugins if p.rel == "plugins/more/deploy-checker-old"][0]
    assert shadowed.state == "skipped" and "shadowed by catalog plugin 'deploy-checker'" in shadowed.reason
    clash = [p for p in plugins if p.tracked and p.rel == "plugins/extras/changelog-lint"][0]
    assert clash.state == "error" and "both become skill name 'deploy-checker'" in clash.reason
    assert len({p.key for p in plugins}) == len(plugins)


def test_a_root_plugin_json_outside_the_catalog_is_not_a_plugin(mk):
    loose = mk / "plugins/loose"
    loose.mkdir()
    (loose / "plugin.json").write_text('{"name": "loose", "description": "another tool\'s manifest"}')
    (loose / "README.md").write_text("# Loose\n")
    assert "loose" not in by_key(discover(mk))
