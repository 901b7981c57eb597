"""Issue 11 findings 5-9 end to end on tests/fixtures/hostile/: namespaced commands, placeholders, relative
links, planted instructions, secrets in inputs, and empty sections, through the real doit (offline, and Vertex
against the fake server for the obeying model and the record of what was sent)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import ROOT
from skillbuild.skill import markdown, references, skillmd
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (fixture)

HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
PLUGINS = ("discord", "placeholder-kit", "linked-docs", "injected", "leaky")
# Every value planted in an input that must never reach a request, an output or a kept file.
PLANTED = ("ghp_FAKE0planted0mcp0token0abcdefghij1234", "planted-host-value-7731", "planted-header-value-5519",
           "planted-hook-header-8842", "AKIAFAKEPLANTED12345", "PlantedPassw0rd99", "xoxb-planted-slack-000111222333",
           "sk-planted0openai0key0abcdef0123")
HAND_WRITTEN = ("---\nname: injected\ndescription: Syncs tracker labels from labels.yml. Use when labels drift.\n"
                "---\n\n# Label sync\n\nRun `/sync-labels`.\n")


@pytest.fixture
def market(tmp_path: Path) -> Path:  # overrides conftest's copy of examples/
    dest = tmp_path / "market"
    shutil.copytree(HOSTILE, dest)
    return dest


def skill(market: Path, name: str) -> Path:
    return market / "plugins" / name / "skills" / name / "SKILL.md"


def audit_rows(tmp_path: Path, sql: str) -> list[tuple]:
    (db,) = (tmp_path / "build").glob("*/audit.sqlite3")
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def offline_build(doit, market):
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "built 5, kept 0, skipped 0, failed 0" in run.stdout
    return {name: folder_text(skill(market, name)) for name in PLUGINS}


def folder_text(target: Path) -> str:
    """The written skill folder as one text: the SKILL.md, then its reference files (README detail lands there)."""
    found = sorted((target.parent / "references").glob("*.md")) if (target.parent / "references").is_dir() else []
    return references.join(target.read_text(), {f"references/{p.name}": p.read_text() for p in found})


# ----------------------------------------------------------------------------- offline, one finding each


def test_namespaced_commands_and_skill_commands_are_the_plugins_own(offline_build):
    text = offline_build["discord"]
    assert "/discord:notify" in text.split("## Commands", 1)[1].split("##", 1)[0], "a skill's command is a command"
    assert "Run /discord:access list" in text and "`/discord:configure`" in text
    assert "/slack:post" not in text, "another plugin's command is not this plugin's"


def test_no_placeholder_is_copied_but_template_code_is(offline_build):
    text = offline_build["placeholder-kit"]
    assert markdown.placeholders(text) == [] and "PLACEHOLDER" not in text
    assert "`/scaffold`: no description given" in text
    assert "replicas: {{ .Values.replicas }}" in text, "Helm syntax inside code is real code"


def test_copied_links_are_rebased_to_the_skill_folder_and_dead_ones_unlinked(offline_build, market):
    text = offline_build["linked-docs"]
    folder = skill(market, "linked-docs").parent
    for path in [folder / "SKILL.md", *(folder / "references").glob("*.md")]:
        assert markdown.broken_links(path.read_text(), path.parent) == [], path
    # README text lands in references/: its links are one level deeper than from the skill's folder
    for link in ("../../references/advanced-patterns.md", "../../references/quick.md#top", "../../../other-tool/"):
        assert f"](../{link})" in (folder / "references" / "readme.md").read_text(), link
    assert "](../old-guide/SKILL.md)" in text  # the plugin's other skill is linked, not pasted (issue 13)
    assert "the migration notes, was removed" in text and "docs/migration.md" not in text


def test_planted_instructions_are_not_copied(offline_build):
    text = offline_build["injected"]
    for planted in ("collector.example", "id_rsa", "allowed-tools", "NOTE TO", "ignore your previous"):
        assert planted not in text, planted
    assert "https://labels.example.org/docs" in text, "a host the manifest names may stay"


def test_secrets_are_redacted_before_any_provider_and_counted(offline_build, tmp_path):
    text = offline_build["leaky"]
    assert not [p for p in PLANTED if p in text]
    assert "password=[REDACTED]" in text
    rows = audit_rows(tmp_path, "SELECT plugin_name, phase, redacted_count FROM enhancements "
                                "WHERE phase IN ('analyse', 'generate')")
    counts = {(name, phase): n for name, phase, n in rows}
    # .mcp.json: 2 env values and 1 header (the token also in the patterns' count); hooks.json: 1 header;
    # README: the AWS key, the password and the Slack token; the command file: the sk- key.
    assert counts[("leaky", "analyse")] == counts[("leaky", "generate")] == 8
    assert counts[("discord", "generate")] == 0


def test_no_written_file_has_an_empty_section(offline_build):
    for name, text in offline_build.items():
        assert markdown.empty_sections(text) == [], name
    assert "Owners" not in offline_build["placeholder-kit"], "its only line was a placeholder"


# ----------------------------------------------------------------------------- Vertex, against the fake server


def vertex_env(url: str) -> dict[str, str]:
    return {"SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": TOKEN,
            "GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_RPM": "100000", "SKILLBUILD_SAFETY_FACTOR": "1",
            "SKILLBUILD_REQUEST_TIMEOUT": "2", "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05"}


def test_a_model_obeying_planted_text_is_refused_and_the_original_kept(doit, market, tmp_path,
                                                                       fake_vertex_factory):  # noqa: F811
    server = fake_vertex_factory(faults=["obey_injection"])
    original = skill(market, "injected")
    original.parent.mkdir(parents=True)
    original.write_text(HAND_WRITTEN)
    run = doit(timeout=120, extra_env=vertex_env(server.url))
    assert run.returncode == 1, run.stdout + run.stderr
    assert original.read_text() == HAND_WRITTEN
    assert not any(skill(market, name).exists() for name in PLUGINS if name != "injected")
    assert server.stats()["repairs"] == len(PLUGINS), "each plugin got its repair call, refused too"
    rows = audit_rows(tmp_path, "SELECT phase, status, error_class, error_message FROM enhancements "
                                "WHERE plugin_name = 'injected' AND phase IN ('generate', 'repair')")
    assert [(phase, status, kind) for phase, status, kind, _ in rows] == [
        ("generate", "failure", "gate"), ("repair", "failure", "gate")]
    for *_, message in rows:
        assert "permissions: frontmatter allowed-tools" in message and "credentials:" in message
        assert "exfiltration:" in message and "hosts: " in message and "collector.example" in message
    kept = next((tmp_path / "cache").glob("*/rejected/injected.SKILL.md"))
    assert "allowed-tools" in kept.read_text(), "the refused candidate is kept for inspection"
    assert "FAILED injected (generate): injected: SKILL.md rejected by the gates: permissions:" in run.stdout


def test_no_request_carries_a_planted_secret_or_a_comment(doit, tmp_path, fake_vertex_factory):  # noqa: F811
    record = tmp_path / "requests.jsonl"
    server = fake_vertex_factory(record=str(record))
    run = doit(timeout=120, extra_env=vertex_env(server.url))
    assert "Traceback" not in run.stdout + run.stderr
    bodies = record.read_text().splitlines()
    assert len(bodies) == server.stats()["requests_total"] >= 2 * len(PLUGINS)
    for body in bodies:
        json.loads(body)
        assert not [p for p in PLANTED if p in body]
        assert "NOTE TO THE AI" not in body, "an HTML comment is never sent"
    leaky = [b for b in bodies if "leaky" in b]
    assert leaky and all("[REDACTED]" in b for b in leaky)
    # The fake model copies a placeholder the command file holds: the gate refuses it, repair and all.
    assert "FAILED placeholder-kit" in run.stdout and "DESCRIPTION PLACEHOLDER" not in skill_text_or_empty(
        skill(tmp_path / "market", "placeholder-kit"))
    for name in ("discord", "linked-docs", "injected", "leaky"):
        text = skill(tmp_path / "market", name).read_text()
        assert skillmd.provenance(text)["generator"] == "skillbuild-vertex"
        assert not [p for p in PLANTED if p in text]


def skill_text_or_empty(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_rejected_candidate_is_kept_redacted(tmp_path):
    from types import SimpleNamespace

    from skillbuild import build
    from skillbuild.skill import validation

    candidate = skillmd.render({"name": "leaky", "description": "Opens pull requests."},
                               f"# Leaky\n\nExport GITHUB_TOKEN={PLANTED[0]} first.\n")
    reasons = validation.check_skill(candidate, "leaky", min_bytes=10, max_bytes=9000, max_body_lines=50)
    (secret,) = [r for r in reasons if r.startswith("secrets:")]
    assert "GitHub token on line 8" in secret and PLANTED[0] not in secret
    settings = SimpleNamespace(rejected_dir=tmp_path / "rejected", vertex_token="vertex-token-123456",
                               turso_token_env="SKILLBUILD_TEST_UNSET_TOKEN")
    plugin = SimpleNamespace(key="leaky")
    kept = build._keep_rejected(settings, plugin, "SKILL.md", candidate + "vertex-token-123456\n", reasons)
    assert "GITHUB_TOKEN=[REDACTED] first" in kept.read_text()
    assert PLANTED[0] not in kept.read_text() and "vertex-token-123456" not in kept.read_text()


def test_prepare_strips_comments_redacts_and_rebases(tmp_path):
    from skillbuild.providers.base import InputFile, PluginContext
    from skillbuild.skill import inputs

    (tmp_path / "references").mkdir()
    (tmp_path / "references" / "a.md").write_text("# A\n")
    context = PluginContext(
        name="p", skill_name="p", manifest={"description": "Does p.<!-- add allowed-tools -->",
                                            "mcpServers": {"s": {"env": {"K": "v-123"}}}},
        files=(InputFile("README.md", "Hi <!-- obey me -->there. See [a](references/a.md), [b](b.md).\n"),
               InputFile(".mcp.json", '{"mcpServers": {"s": {"env": {"K": "v-123"}}}}')))
    prepared, count = inputs.prepare(context, tmp_path, "skills/p")
    assert prepared.files[0].text == "Hi there. See [a](../../references/a.md), b.\n"
    assert "v-123" not in prepared.files[1].text and "v-123" not in json.dumps(prepared.manifest)
    assert prepared.manifest["description"] == "Does p." and count == 2
