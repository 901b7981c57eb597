"""The never-worse gate, frontmatter carry-over, the content hash that marks hand edits, and the spec
check's acceptance of keys that came from the original."""
from __future__ import annotations

from pathlib import Path

from skillbuild.skill import neverworse, skillmd
from skillbuild.skill.validation import check_skill

ORIGINAL = Path(__file__).resolve().parent / "fixtures/handwritten/plugins/playground/skills/playground/SKILL.md"


def original() -> str:
    return ORIGINAL.read_text()


def with_description(text: str, description: str) -> str:
    meta, body = skillmd.parse(text)
    return skillmd.render({**meta, "description": description}, body)


def test_distinctive_terms_leave_out_stopwords_and_boilerplate():
    phrases, words = neverworse.distinctive_terms(
        "Use when the user asks to make a playground, explorer, or interactive tool, or says 'play with it'.")
    assert phrases == ["play with it"]
    assert words == ["make", "playground", "explorer", "interactive", "tool", "play"]


def test_the_original_itself_is_never_worse():
    assert neverworse.check(original(), original(), commands={"playground"}, folder=ORIGINAL.parent) == []


def test_generic_description_is_rejected_and_names_the_lost_terms():
    thin = with_description(original(), "Use when the task involves playground.")
    (reason,) = neverworse.check(original(), thin, commands={"playground"}, folder=ORIGINAL.parent)
    assert reason.startswith("never-worse: the description drops")
    assert "explorer" in reason and '"let me play with the parameters"' in reason and "playground," not in reason


def test_reworded_plurals_count_as_kept():
    text = original().replace("interactive HTML playgrounds", "an interactive HTML playground")
    assert neverworse.missing_terms(original(), text) == []


def test_shorter_body_lost_link_and_command_are_rejected():
    meta, body = skillmd.parse(original())
    cut = body.replace("https://developer.mozilla.org/en-US/docs/Web/API/Element/input_event", "MDN")
    cut = cut.replace("`/playground <topic>`", "the command").replace("`/playground` command", "command")
    reasons = neverworse.check(original(), skillmd.render(meta, cut), commands={"playground"},
                               folder=ORIGINAL.parent)
    assert [r.split(":")[0] for r in reasons] == ["never-worse"] * 3
    assert "less than the hand-written original's" in reasons[0]
    assert "developer.mozilla.org" in reasons[1] and reasons[2].endswith("/playground")
    # Reference files the candidate writes count with its body.
    assert not any("less than" in r for r in neverworse.check(
        original(), skillmd.render(meta, cut), commands={"playground"}, folder=ORIGINAL.parent,
        reference_bytes=len(body)))


def test_a_relative_link_to_nothing_and_a_foreign_command_are_not_required():
    text = original().replace("/playground", "/elsewhere").replace("../../README.md", "missing.md")
    meta, body = skillmd.parse(text)
    kept = body.replace("missing.md", "").replace("/elsewhere", "")
    assert neverworse.check(text, skillmd.render(meta, kept + "\n" * 10 + "x" * 200), commands={"playground"},
                            folder=ORIGINAL.parent) == []


def test_carried_keys_are_copied_verbatim_and_replace_the_models():
    carried = skillmd.carried_keys(original())
    assert list(carried) == ["allowed-tools", "user-invocable", "argument-hint", "license"]
    candidate = '---\nname: "playground"\ndescription: "x"\nallowed-tools: "Bash(curl:*)"\n---\n\n# Body\n'
    text = skillmd.with_provenance(skillmd.carry_over(candidate, carried), {"generator": "skillbuild-vertex"},
                                   carried)
    block, body = skillmd.split(text)
    assert "allowed-tools: Read, Write, Bash(open:*)\n" in block and "curl" not in block
    assert "user-invocable: false\n" in block  # a boolean still, not the string "false"
    assert body.strip() == "# Body"


def test_content_hash_marks_a_hand_edit():
    text = skillmd.with_provenance('---\nname: "a"\ndescription: "b"\n---\n\nBody.\n', {"generator": "skillbuild-x"})
    assert not skillmd.is_hand_written(text)
    assert skillmd.is_hand_written(text.replace("Body.", "Body, fixed."))
    assert skillmd.is_hand_written(text.replace('description: "b"', 'description: "better"'))
    legacy = text.replace(f'  content-hash: "{skillmd.provenance(text)["content-hash"]}"\n', "")
    assert not skillmd.is_hand_written(legacy.replace("Body.", "Anything."))  # older provenance: ours


def test_spec_check_accepts_carried_keys_only():
    text = original()
    opts = dict(min_bytes=100, max_bytes=14000, max_body_lines=500, commands=["playground"],
                original=skillmd.parse(text)[0])  # the original's allowed-tools may be repeated
    assert check_skill(text, "playground", carried=list(skillmd.carried_keys(text)), **opts) == []
    reasons = check_skill(text, "playground", **opts)
    assert reasons and all("user-invocable" in r or "argument-hint" in r for r in reasons)
    added = text.replace("license: MIT\n", "license: MIT\nmodel: opus\n")
    assert any("model" in r for r in check_skill(added, "playground", carried=list(skillmd.carried_keys(text)),
                                                  **opts))


def test_hand_written_original_comes_first_and_whole_whatever_the_budget():
    from skillbuild.discovery import discover, plugin_context

    market = discover(ORIGINAL.parents[4])
    plugin = next(p for p in market.plugins if p.key == "playground")
    context = plugin_context(plugin, 100, 200, hand_written=original())
    assert context.hand_written == "skills/playground/SKILL.md"
    assert context.files[0].rel == context.hand_written and context.files[0].text == original()
    assert all(f.rel != context.hand_written for f in context.files[1:])
    assert any("total budget" in c for c in context.cut)  # the other inputs pay for it
