import pytest

from skillbuild.skill import skillmd
from skillbuild.skill.validation import check_skill

BODY = "# Demo\n\nUse `/deploy` to ship, then ask @reviewer. The `checker` agent double-checks. GET /users is fine.\n"


def good(**meta):
    base = {"name": "demo", "description": "Ships things. Use when deploying.", **meta}
    return skillmd.render(base, BODY)


def check(text, **kw):
    opts = dict(min_bytes=50, max_bytes=5000, max_body_lines=50, commands=["deploy"], agents=["reviewer", "checker"])
    opts.update(kw)
    return check_skill(text, "demo", **opts)


def test_valid_file_passes():
    assert check(good(metadata={"generator": "skillbuild-offline"})) == []


@pytest.mark.parametrize("text, reason", [
    ("\ufeff" + good(), "frontmatter must start with a '---' line at byte 0"),
    ("```markdown\n" + good() + "```\n", "wrapped in a code fence"),
    (good().replace('name: "demo"', 'name: "other"'), "must match skill name"),
    (good().replace('description: "Ships things. Use when deploying."', 'description: ""'), "description"),
    (good(description="Ships --- things"), "contains '---'"),
    (good(description="Ships <b>bold</b> things"), "XML/HTML tag"),
    (good(version="1.0"), "Unexpected fields in frontmatter: version"),
    (good().replace(BODY, BODY + "TODO: finish\n"), "placeholder text present: TODO"),
    (good().replace(BODY, BODY + "Write [Your name] here\n"), "placeholder text present: [Your"),
    (good().replace(BODY, BODY + "Lorem ipsum dolor\n"), "placeholder text present"),
    (good().replace(BODY, BODY + "Run /launch now.\n"), "slash commands the plugin does not have: /launch"),
    (good().replace(BODY, BODY + "Ask @ghost.\n"), "agents the plugin does not have: ghost"),
    (good().replace(BODY, "```\n" + BODY + "```\n"), "body is wrapped in a code fence"),
    (good().replace(BODY, BODY + "line\n" * 60), "body has"),
])
def test_each_gate_fails(text, reason):
    reasons = check(text)
    assert any(reason in r for r in reasons), reasons


def test_size_bounds():
    text = good()
    assert any("bytes; it must be" in r for r in check(text, min_bytes=len(text.encode()) + 1))
    assert any("bytes; it must be" in r for r in check(text, max_bytes=len(text.encode()) - 1))


def test_paths_urls_and_emails_are_not_commands_or_agents():
    body = ("See /tmp and /usr/local/bin, https://example.com/docs and mail ops@example.com.\n"
            "Install @types/node. Run `npx tool@latest`.\n\n```bash\ncd /tmp\n```\n")
    text = skillmd.render({"name": "demo", "description": "d"}, body)
    assert check(text) == []


def test_provenance_round_trip():
    text = skillmd.with_provenance(good(), {"generator": "skillbuild-offline", "source-hash": "abc"})
    assert skillmd.provenance(text) == {"generator": "skillbuild-offline", "source-hash": "abc",
                                        "content-hash": skillmd.content_hash(text)}
    assert skillmd.provenance(good()) is None
    assert skillmd.provenance("no frontmatter") is None
    assert check(text) == []
