"""Backups before change: complete, verified, tamper-evident, restorable byte for byte, pruned safely."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from skillbuild.safety.backup import (
    FILES, MANIFEST, REASON_RESTORE, BackupError, backup_plugin, list_backups, prune, restore_plugin, verify_backup,
)


def make_plugin(root: Path) -> Path:
    """A plugin folder with the awkward parts: secrets, modes, links in and out, an empty folder."""
    p = root / "demo-plugin"
    (p / ".claude-plugin").mkdir(parents=True)
    (p / ".claude-plugin" / "plugin.json").write_text('{"name": "demo-plugin"}\n')
    (p / "README.md").write_text("# Demo\n" + "text " * 500)
    (p / "skills" / "demo-plugin").mkdir(parents=True)
    (p / "skills" / "demo-plugin" / "SKILL.md").write_text("---\nname: demo-plugin\n---\nhand written\n")
    (p / "scripts").mkdir()
    (p / "scripts" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(p / "scripts" / "run.sh", 0o755)
    (p / ".env").write_text("API_KEY=do-not-log-me\n")
    os.chmod(p / ".env", 0o600)
    (p / "server.pem").write_bytes(b"\x00\x01binary\xff")
    (p / "empty").mkdir()
    os.symlink("README.md", p / "readme-link")
    os.symlink("/etc/hostname", p / "outside-link")
    return p


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a restore must reproduce: bytes, modes, link targets, folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", full.read_bytes(), stat.S_IMODE(st.st_mode))
    return out


def test_backup_is_complete_and_verified(tmp_path):
    plugin = make_plugin(tmp_path)
    path = backup_plugin(tmp_path / "backups", "20261129T101500Z-ab12", "demo-plugin", plugin)
    assert path == tmp_path / "backups" / "20261129T101500Z-ab12" / "demo-plugin"
    assert verify_backup(path) == []
    assert snapshot(path / FILES) == snapshot(plugin)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["files"][".env"]["sha256"] == hashlib.sha256(b"API_KEY=do-not-log-me\n").hexdigest()
    assert manifest["files"][".env"]["mode"] == "0600" and manifest["files"]["scripts/run.sh"]["mode"] == "0755"
    assert manifest["symlinks"] == {"outside-link": "/etc/hostname", "readme-link": "README.md"}
    assert "do-not-log-me" not in (path / MANIFEST).read_text()
    assert [b.run_id for b in list_backups(tmp_path / "backups", "demo-plugin")] == ["20261129T101500Z-ab12"]


def test_second_backup_in_a_run_keeps_the_state_before_the_run(tmp_path):
    plugin = make_plugin(tmp_path)
    first = backup_plugin(tmp_path / "b", "run1", "demo-plugin", plugin)
    (plugin / "README.md").write_text("changed by the run\n")
    assert backup_plugin(tmp_path / "b", "run1", "demo-plugin", plugin) == first
    assert (first / FILES / "README.md").read_text().startswith("# Demo")


@pytest.mark.parametrize("tamper, expect", [
    (lambda b: (b / FILES / "README.md").write_text("# Demo\nedited"), "README.md: content differs"),
    (lambda b: (b / FILES / "server.pem").unlink(), "server.pem: missing"),
    (lambda b: (b / FILES / "extra.txt").write_text("x"), "extra.txt: not in the manifest"),
    (lambda b: os.chmod(b / FILES / "scripts" / "run.sh", 0o644), "run.sh: mode 0644 differs"),
    (lambda b: ((b / FILES / "readme-link").unlink(), os.symlink("/etc/passwd", b / FILES / "readme-link")),
     "readme-link: symlink differs"),
    (lambda b: (b / MANIFEST).write_text("{not json"), "manifest missing or unreadable"),
])
def test_tampered_backup_is_caught_and_restore_refuses(tmp_path, tamper, expect):
    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    path = backup_plugin(root, "run1", "demo-plugin", plugin)
    (plugin / "skills" / "demo-plugin" / "SKILL.md").write_text("generated\n")
    before = snapshot(plugin)
    tamper(path)
    problems = verify_backup(path)
    assert any(expect in p for p in problems), problems
    with pytest.raises(BackupError, match="failed verification|manifest"):
        restore_plugin(root, "demo-plugin", plugin, at_run="run1", run_id="run2")
    assert snapshot(plugin) == before  # nothing changed
    assert not (root / "run2").exists()  # not even a safety backup


def test_restore_round_trip_is_byte_identical(tmp_path):
    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    original = snapshot(plugin)
    backup_plugin(root, "20261129T100000Z-aaaa", "demo-plugin", plugin)
    # what a run (and a person) might do afterwards
    (plugin / "skills" / "demo-plugin" / "SKILL.md").write_text("---\nname: demo-plugin\n---\ngenerated\n")
    (plugin / "skills" / "other").mkdir()
    (plugin / "skills" / "other" / "SKILL.md").write_text("new\n")
    (plugin / "server.pem").unlink()
    os.chmod(plugin / "scripts" / "run.sh", 0o644)
    (plugin / "readme-link").unlink()
    (plugin / "empty").rmdir()
    changed = snapshot(plugin)

    result = restore_plugin(root, "demo-plugin", plugin, run_id="20261129T110000Z-bbbb")
    assert snapshot(plugin) == original
    assert result.run_id == "20261129T100000Z-aaaa"
    assert (result.written, result.removed) == (3, 2)  # SKILL.md, server.pem, link; other/SKILL.md, other/
    assert result.unchanged == 4  # plugin.json, README.md, .env, and run.sh, whose mode alone was put back
    assert result.backup_path == root / "20261129T100000Z-aaaa" / "demo-plugin"
    assert result.seconds < 300  # the seed's promise: under five minutes per plugin
    # the state it replaced was backed up first, so the restore can be undone
    assert result.safety_backup == root / "20261129T110000Z-bbbb" / "demo-plugin"
    assert snapshot(result.safety_backup / FILES) == changed
    infos = list_backups(root, "demo-plugin")
    assert [(b.run_id, b.reason) for b in infos][-1] == ("20261129T110000Z-bbbb", REASON_RESTORE)
    # "latest" still means the latest backup taken before a change, not the safety copy
    again = restore_plugin(root, "demo-plugin", plugin)
    assert again.run_id == "20261129T100000Z-aaaa" and again.written == 0 and again.removed == 0
    undo = restore_plugin(root, "demo-plugin", plugin, at_run="20261129T110000Z-bbbb")
    assert snapshot(plugin) == changed and undo.written > 0


def test_restore_into_a_missing_folder(tmp_path):
    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    original = snapshot(plugin)
    backup_plugin(root, "run1", "demo-plugin", plugin)
    dest = tmp_path / "elsewhere" / "demo-plugin"
    result = restore_plugin(root, "demo-plugin", dest, run_id="run2")
    assert snapshot(dest) == original and result.safety_backup is None


def test_restore_names_the_runs_it_has(tmp_path):
    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    backup_plugin(root, "run1", "demo-plugin", plugin)
    with pytest.raises(BackupError, match=r"from run 'run9'.*runs: run1"):
        restore_plugin(root, "demo-plugin", plugin, at_run="run9")
    with pytest.raises(BackupError, match="no backup of plugin 'ghost'"):
        restore_plugin(root, "ghost", plugin)


def test_prune_keeps_the_newest_and_never_the_only_one(tmp_path):
    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    other = tmp_path / "other-plugin"
    other.mkdir()
    (other / "a.txt").write_text("a")
    for run in ("20261101T000000Z-0001", "20261102T000000Z-0002", "20261103T000000Z-0003"):
        backup_plugin(root, run, "demo-plugin", plugin)
    backup_plugin(root, "20261101T000000Z-0001", "other-plugin", other)

    removed = prune(root, "demo-plugin", keep_last=2)
    assert removed == [root / "20261101T000000Z-0001" / "demo-plugin"]
    assert (root / "20261101T000000Z-0001" / "other-plugin").is_dir()  # another plugin's backup in that run stays
    assert prune(root, "demo-plugin", keep_last=1) == [root / "20261102T000000Z-0002" / "demo-plugin"]
    assert not (root / "20261102T000000Z-0002").exists()  # emptied run folder removed
    assert prune(root, "demo-plugin", keep_last=1) == []
    assert prune(root, "other-plugin", keep_last=1) == []
    assert [b.run_id for b in list_backups(root, "demo-plugin")] == ["20261103T000000Z-0003"]
    with pytest.raises(ValueError, match="keep_last=0"):
        prune(root, "demo-plugin", keep_last=0)
    assert len(list_backups(root, "demo-plugin")) == 1


def test_bad_names_and_leftovers(tmp_path):
    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    with pytest.raises(BackupError, match="cannot be used as a folder name"):
        backup_plugin(root, "run1", "../escape", plugin)
    with pytest.raises(BackupError, match="is not a folder"):
        backup_plugin(root, "run1", "demo-plugin", tmp_path / "missing")
    (root / "run0" / ".demo-plugin.partial-999").mkdir(parents=True)  # a copy killed midway
    assert list_backups(root, "demo-plugin") == []


def test_unchanged_files_are_hard_links_to_the_previous_backup(tmp_path):
    """A large file the build never touches costs its size once, however many backups keep it."""
    plugin = make_plugin(tmp_path)
    (plugin / "data.bin").write_bytes(os.urandom(2_000_000))
    root = tmp_path / "backups"
    first = backup_plugin(root, "20261129T100000Z-aaaa", "demo-plugin", plugin)
    (plugin / "skills" / "demo-plugin" / "SKILL.md").write_text("---\nname: demo-plugin\n---\nrewritten\n")
    second = backup_plugin(root, "20261129T110000Z-bbbb", "demo-plugin", plugin)
    big_1, big_2 = first / FILES / "data.bin", second / FILES / "data.bin"
    assert big_1.stat().st_ino == big_2.stat().st_ino and big_2.stat().st_nlink == 2
    skill = "skills/demo-plugin/SKILL.md"
    assert (first / FILES / skill).stat().st_ino != (second / FILES / skill).stat().st_ino
    assert (second / FILES / skill).read_text().endswith("rewritten\n")
    assert verify_backup(first) == [] and verify_backup(second) == []
    prune(root, "demo-plugin", keep_last=1)  # the older backup goes; the linked data stays in the newer one
    assert not first.exists() and verify_backup(second) == []


KILLED_RESTORE = """
import os, signal, sys
from pathlib import Path
from skillbuild.safety import backup
real_replace, moved = os.replace, []
def dying_replace(src, dst):
    real_replace(src, dst)
    if ".skillbuild-restore-demo-plugin-" in str(src):  # a staged file moved into the plugin
        moved.append(dst)
    if moved and len(moved) == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = dying_replace
if sys.argv[4] == "0":  # killed while staging, before anything moved into the plugin
    backup._fsync_tree = lambda root: os.kill(os.getpid(), signal.SIGKILL)
from skillbuild.safety.journal import Journal
backup.restore_plugin(Path(sys.argv[1]), "demo-plugin", Path(sys.argv[2]), run_id=sys.argv[3],
                      journal=Journal(Path(sys.argv[1]).parent / "journal"))
"""


@pytest.mark.parametrize("moves, expect", [(0, "before"), (1, "backup"), (3, "backup")])
def test_a_killed_restore_is_completed_or_rolled_back_by_the_next_run(tmp_path, moves, expect):
    import subprocess
    import sys

    from skillbuild.safety.journal import Journal

    plugin = make_plugin(tmp_path)
    root = tmp_path / "backups"
    backup_plugin(root, "20261129T100000Z-aaaa", "demo-plugin", plugin)
    wanted = snapshot(plugin)
    for name in ("README.md", "scripts/run.sh", "skills/demo-plugin/SKILL.md"):
        (plugin / name).write_text("changed after the backup\n")
    (plugin / "NEW.md").write_text("not in the backup\n")
    before = snapshot(plugin)
    proc = subprocess.run([sys.executable, "-c", KILLED_RESTORE, str(root), str(plugin), "20261129T110000Z-bbbb",
                           str(moves)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    journal = Journal(tmp_path / "journal")
    assert list(journal.folder.glob("*.json")), "the killed restore left no journal entry"
    actions = journal.reap()
    assert actions and not list(journal.folder.glob("*.json"))
    assert snapshot(plugin) == (wanted if expect == "backup" else before)
    assert not list(plugin.parent.glob(".skillbuild-*"))  # no staging folder left beside the plugin


def test_prune_by_bytes_counts_hard_links_once_and_never_removes_the_newest(tmp_path):
    """backup_keep_bytes: the oldest backups go while the plugin's backups use more than the limit."""
    plugin = make_plugin(tmp_path)
    (plugin / "data.bin").write_bytes(os.urandom(300_000))  # unchanged between backups: hard-linked, counted once
    root = tmp_path / "backups"
    runs = [f"2026110{i}T000000Z-000{i}" for i in range(1, 5)]
    for i, run in enumerate(runs):
        (plugin / "skills" / "demo-plugin" / "SKILL.md").write_text("x" * 100_000 + str(i))  # a new file each time
        backup_plugin(root, run, "demo-plugin", plugin)
    from skillbuild.safety.backup import backups_bytes

    paths = [b.path for b in list_backups(root, "demo-plugin")]
    one = backups_bytes(paths[:1])
    assert one > 400_000 and backups_bytes(paths) < one + 3 * 110_000  # data.bin counted once across four
    assert prune(root, "demo-plugin", keep_last=10, keep_bytes=0) == []  # 0: no byte limit
    removed = prune(root, "demo-plugin", keep_last=10, keep_bytes=one + 110_000)
    assert removed == [root / r / "demo-plugin" for r in runs[:2]]  # oldest first, until the rest fit
    left = [b.path for b in list_backups(root, "demo-plugin")]
    assert left == [root / r / "demo-plugin" for r in runs[2:]] and all(verify_backup(p) == [] for p in left)
    assert prune(root, "demo-plugin", keep_last=10, keep_bytes=1) == [root / runs[2] / "demo-plugin"]
    assert [b.run_id for b in list_backups(root, "demo-plugin")] == [runs[3]]  # the newest is never removed
    assert verify_backup(root / runs[3] / "demo-plugin") == []
