"""The .gitignore rules the search for untracked plugins follows, checked against git's documented examples."""
from __future__ import annotations

from pathlib import Path

from skillbuild.gitignore import Ignores, parse_line


def ignores(tmp_path: Path, files: dict[str, str]) -> Ignores:
    found = Ignores()
    for base, text in files.items():
        folder = tmp_path / base if base else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".gitignore").write_text(text)
        found.read(base, folder)
    return found


def test_comments_blanks_and_escapes():
    assert parse_line("# a comment") is None and parse_line("   ") is None and parse_line("/") is None
    rule = parse_line(r"\#notes")
    assert rule is not None and rule.regex.fullmatch("#notes")


def test_unanchored_names_match_at_any_depth(tmp_path):
    rules = ignores(tmp_path, {"": "backups\n*.tmp\nold-?\n"})
    assert rules.ignored("backups", True) and rules.ignored("a/b/backups", True)
    assert rules.ignored("x/y.tmp", False) and rules.ignored("old-1", True)
    assert not rules.ignored("old-12", True) and not rules.ignored("backups-2", True)


def test_leading_and_middle_slash_anchor(tmp_path):
    rules = ignores(tmp_path, {"": "/scratch\ndoc/frotz\n"})
    assert rules.ignored("scratch", True) and not rules.ignored("plugins/scratch", True)
    assert rules.ignored("doc/frotz", True) and not rules.ignored("a/doc/frotz", True)


def test_trailing_slash_matches_folders_only(tmp_path):
    rules = ignores(tmp_path, {"": "build/\n"})
    assert rules.ignored("build", True) and rules.ignored("x/build", True)
    assert not rules.ignored("build", False)


def test_double_star_forms(tmp_path):
    rules = ignores(tmp_path, {"": "**/fixtures\nlogs/**\na/**/z\n"})
    assert rules.ignored("fixtures", True) and rules.ignored("tests/e2e/fixtures", True)
    assert rules.ignored("logs/x", True) and rules.ignored("logs/x/y", True) and not rules.ignored("logs", True)
    assert rules.ignored("a/z", True) and rules.ignored("a/b/c/z", True) and not rules.ignored("b/a/z", True)


def test_negation_and_last_match_wins(tmp_path):
    rules = ignores(tmp_path, {"": "plugins/*\n!plugins/keep\n"})
    assert rules.ignored("plugins/drop", True) and not rules.ignored("plugins/keep", True)


def test_nested_files_apply_to_their_folder_and_win(tmp_path):
    rules = ignores(tmp_path, {"": "wip-*\n", "plugins": "/only-here\n!wip-keep\n"})
    assert rules.ignored("plugins/only-here", True) and not rules.ignored("only-here", True)
    assert rules.ignored("plugins/wip-a", True) and not rules.ignored("plugins/wip-keep", True)
    assert rules.ignored("wip-keep", True)  # the nested negation applies below plugins/ only
