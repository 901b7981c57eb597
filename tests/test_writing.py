import os

import pytest

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


def test_backup_before_replace(tmp_path):
    path = tmp_path / "plugin/skills/x/SKILL.md"
    path.parent.mkdir(parents=True)
    path.write_text("hand-written")
    saved = writing.write_with_backup(path, "generated", tmp_path / "backups", "run1", "x", "skills/x/SKILL.md")
    assert saved == tmp_path / "backups/run1/x/skills/x/SKILL.md"
    assert saved.read_text() == "hand-written" and path.read_text() == "generated"
    assert writing.write_with_backup(tmp_path / "new.md", "t", tmp_path / "b", "r", "x", "new.md") is None
