"""`doit backup`, `doit restore_offsite` and `doit backups` end to end, against a real sqld."""
from __future__ import annotations

import shutil
from pathlib import Path

import sqlite3

from sqld_server import sqld, sqld_binary  # noqa: F401  (pytest fixtures)

SECRET = ".env.example"


def backup_rows(build: Path) -> list[tuple]:
    (db,) = build.glob("*/audit.sqlite3")  # the live DB, not the snapshots inside archives
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT status, error_class, error_message, backup_path FROM enhancements "
                            "WHERE phase = 'backup' ORDER BY id").fetchall()


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != SECRET}


def test_backup_then_restore_from_turso_alone(doit, market, tmp_path, sqld):  # noqa: F811
    env = {"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token}
    assert doit().returncode == 0  # some SKILL.md files exist, as after a night's run
    before = tree(market)
    run = doit("-n", "1", "backup", extra_env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verified against manifest" in run.stdout and sqld.token not in run.stdout + run.stderr
    again = doit("-n", "1", "backup", extra_env=env)
    assert again.returncode == 0 and doit.executed(again) == set()  # unchanged marketplace: nothing to do
    [(status, _, _, folder)] = backup_rows(tmp_path / "build")
    assert status == "success" and "backups/archive/" in folder
    shutil.rmtree(market)
    shutil.rmtree(tmp_path / "build")  # the local backups are gone too
    dest = tmp_path / "restored"
    market.mkdir()  # settings need the marketplace folder to exist to load; it is empty now
    (market / ".claude-plugin").mkdir()
    (market / ".claude-plugin/marketplace.json").write_text('{"name": "skillbuild-examples", "plugins": []}')
    restored = doit("restore_offsite", f"dest={dest}", extra_env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert tree(dest) == before
    listing = doit("backups", "verify=1", extra_env=env)
    assert listing.returncode == 0 and "complete" in listing.stdout


def test_backup_without_turso_says_skipped_and_keeps_local(doit, tmp_path):
    run = doit("backup")
    assert run.returncode == 0
    assert "off-site copy skipped: set TURSO_DATABASE_URL and TURSO_AUTH_TOKEN" in run.stdout
    assert list((tmp_path / "build").rglob("backups/archive/*/manifest.json"))


def test_wrong_token_fails_clearly_and_keeps_local(doit, tmp_path, sqld):  # noqa: F811
    bad = sqld.wrong_token()
    run = doit("backup", extra_env={"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": bad})
    assert run.returncode == 1
    assert "Turso rejected the auth token (HTTP 401)" in run.stdout
    assert bad not in run.stdout + run.stderr
    assert list((tmp_path / "build").rglob("backups/archive/*/manifest.json"))
    [(status, error_class, message, folder)] = backup_rows(tmp_path / "build")
    assert (status, error_class) == ("failure", "offsite") and "HTTP 401" in message and folder
    for path in (tmp_path / "build").rglob("*"):
        if path.is_file():
            assert bad.encode() not in path.read_bytes(), path
