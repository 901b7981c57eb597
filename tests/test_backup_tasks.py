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


def archives(build: Path) -> list[Path]:
    return sorted(p for p in build.glob("*/backups/archive/*") if (p / "backup-info.json").is_file())


def partial_upload(folder: Path, server, chunks: int) -> None:
    """An upload that dies after `chunks` chunks, as when the server is killed mid-way; the server restarts."""
    from skillbuild.safety import offsite

    def die(seq):
        if seq + 1 == chunks:
            server.kill()

    try:
        offsite.upload(folder, server.url, server.token, 1024, on_chunk=die)
    except offsite.OffsiteError:
        pass
    server.start()


def test_an_interrupted_upload_resumes_on_the_same_archive(doit, tmp_path, sqld):  # noqa: F811
    env = {"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token, "SKILLBUILD_BACKUP_CHUNK_SIZE": "1024"}
    sqld.kill()
    first = doit("-n", "1", "backup", extra_env=env)
    assert first.returncode == 1 and "cannot reach Turso" in first.stdout
    [folder] = archives(tmp_path / "build")
    sqld.start()
    partial_upload(folder, sqld, 3)
    again = doit("-n", "1", "backup", extra_env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming the off-site copy of {folder}" in again.stdout
    assert "3 already there" in again.stdout
    assert archives(tmp_path / "build") == [folder]  # no second archive for an unchanged marketplace
    listing = doit("backups", "verify=1", extra_env=env)
    assert listing.returncode == 0, listing.stdout
    assert "complete" in listing.stdout and "verified: 1 local and 1 off-site backup(s)" in listing.stdout


def test_an_abandoned_upload_is_cleaned_up_and_verify_fails_until_then(doit, market, tmp_path, sqld):  # noqa: F811
    env = {"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token, "SKILLBUILD_BACKUP_CHUNK_SIZE": "1024"}
    sqld.kill()
    assert doit("-n", "1", "backup", extra_env=env).returncode == 1
    [old] = archives(tmp_path / "build")
    sqld.start()
    partial_upload(old, sqld, 2)
    stuck = doit("backups", "verify=1", extra_env=env)
    assert stuck.returncode == 1 and "upload interrupted: rerun `doit backup` to resume it" in stuck.stdout
    (market / "plugins" / "devops" / "deploy-checker" / "NOTES.md").write_text("changed since the first backup\n")
    newer = doit("-n", "1", "backup", extra_env=env)
    assert newer.returncode == 0, newer.stdout + newer.stderr
    assert "removed 1 interrupted off-site upload(s) of older archives" in newer.stdout
    assert len(archives(tmp_path / "build")) == 2
    listing = doit("backups", "verify=1", extra_env=env)
    assert listing.returncode == 0 and "uploading" not in listing.stdout
    assert "verified: 2 local and 1 off-site backup(s)" in listing.stdout


def test_a_live_restore_backs_up_first_and_checks_the_local_anchors(doit, market, tmp_path, sqld):  # noqa: F811
    env = {"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token}
    assert doit("-n", "1", "backup", extra_env=env).returncode == 0
    before = tree(market)
    (market / "plugins" / "devops" / "deploy-checker" / "NOTES.md").write_text("written after the backup\n")
    live = doit("restore_offsite", f"dest={market}", "live=1", extra_env=env)
    assert live.returncode == 0, live.stdout + live.stderr
    assert "local backup of the live marketplace before overwriting it" in live.stdout
    assert "hashes match the local audit DB's record of this backup" in live.stdout
    assert len(archives(tmp_path / "build")) == 2
    newest = archives(tmp_path / "build")[-1]
    assert "NOTES.md" in (newest / "manifest.json").read_text()  # what was live is kept before the overwrite
    assert {k: v for k, v in tree(market).items() if not k.endswith("NOTES.md")} == before
