import os

import pytest

from skillbuild import build
from skillbuild.config import load_settings
from skillbuild.discovery import discover
from skillbuild.safety import backup
from skillbuild.store import writing


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "skills/x/SKILL.md"
    writing.atomic_write(path, "one")
    writing.atomic_write(path, "two")
    assert path.read_text() == "two"
    assert writing.leftover_temps(tmp_path) == []


def test_failed_write_keeps_the_original(tmp_path, monkeypatch):
    path = tmp_path / "SKILL.md"
    path.write_text("original")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # the disk fills up before the data is safe
    with pytest.raises(OSError, match="No space left"):
        writing.atomic_write(path, "new text")
    assert path.read_text() == "original"
    assert writing.leftover_temps(tmp_path) == []


def test_backup_before_replace(tmp_path, market):
    """The live write of a SKILL.md (build._write): the old file is in the run's verified backup first."""
    s = load_settings(cli={"marketplace": str(market), "cache_root": str(tmp_path / "cache"),
                           "build_root": str(tmp_path / "build")}, env={})
    plugins = {p.key: p for p in discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked).plugins}
    old, new = plugins["deploy-checker"], plugins["changelog-lint"]
    old.target.parent.mkdir(parents=True)
    old.target.write_text("hand-written")
    saved = build._write(s, old, "run1", "generated")
    rel = old.relpath(old.target)
    assert saved == build.backups_root(s) / "run1" / "deploy-checker"
    assert (saved / backup.FILES / rel).read_text() == "hand-written" and old.target.read_text() == "generated"
    fresh = build._write(s, new, "run2", "t")  # nothing to keep: the backup holds no SKILL.md
    assert not (fresh / backup.FILES / new.relpath(new.target)).exists() and new.target.read_text() == "t"
