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
    assert saved == s.backups_dir / "run1" / "deploy-checker"
    assert (saved / backup.FILES / rel).read_text() == "hand-written" and old.target.read_text() == "generated"
    fresh = build._write(s, new, "run2", "t")  # nothing to keep: the backup holds no SKILL.md
    assert not (fresh / backup.FILES / new.relpath(new.target)).exists() and new.target.read_text() == "t"


def test_mode_is_kept_given_or_0644(tmp_path):
    kept = tmp_path / "kept.sh"
    kept.write_text("old")
    kept.chmod(0o755)
    writing.atomic_write(kept, "new")
    fresh = writing.atomic_write(tmp_path / "new.txt", b"\x00bytes")
    given = writing.atomic_write(tmp_path / "private.json", "{}", mode=0o600)
    assert [p.stat().st_mode & 0o777 for p in (kept, fresh, given)] == [0o755, 0o644, 0o600]
    assert fresh.read_bytes() == b"\x00bytes" and kept.read_text() == "new"


def test_atomic_copy_streams_a_file_and_sets_the_mode(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20))
    dest = writing.atomic_copy(source, tmp_path / "out" / "big.bin", mode=0o640)
    assert dest.read_bytes() == source.read_bytes() and dest.stat().st_mode & 0o777 == 0o640


def test_a_failed_write_with_a_caller_prefix_leaves_no_temp(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        writing.atomic_write(tmp_path / "ab" / "entry.json", "{}", prefix=".ab12.")
    assert list((tmp_path / "ab").iterdir()) == []


def test_every_writer_goes_through_the_one_atomic_write(tmp_path, monkeypatch):
    """The response cache, the report pages and a restore all end in its fsync of the folder."""
    from skillbuild.calls.response_cache import ResponseCache
    from skillbuild.safety import backup
    from skillbuild.store.audit import AuditDB
    from skillbuild.ui import report

    synced: list = []
    real = writing.fsync_dir
    monkeypatch.setattr(writing, "fsync_dir", lambda folder: synced.append(folder) or real(folder))
    entry = ResponseCache(tmp_path / "responses").put("ab" * 32, {"text": "x"})
    page = report.write_html(AuditDB(tmp_path / "audit.sqlite3"), tmp_path / "m" / "report.html", 5)
    latest = report.copy_latest(page, tmp_path / "report.html")
    plugin = tmp_path / "plugin"
    (plugin / "skills").mkdir(parents=True)
    (plugin / "skills" / "SKILL.md").write_text("before")
    backup.backup_plugin(tmp_path / "backups", "run1", "p", plugin)
    (plugin / "skills" / "SKILL.md").write_text("after")
    backup.restore_plugin(tmp_path / "backups", "p", plugin, run_id="run2")
    assert (plugin / "skills" / "SKILL.md").read_text() == "before"
    assert {entry.parent, page.parent, latest.parent, plugin / "skills"} <= set(synced)
