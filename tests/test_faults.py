"""The fault matrix through the real doit: every fault the fake Vertex server scripts, a Turso server that
dies mid-upload, and a disk that fills up while a SKILL.md is written.

Each fault ends in a retry that succeeds, or a clean failure: the old SKILL.md kept, a row in the audit
DB naming the cause, and the reason in the run summary. `FAULTS` (skillbuild/testing/matrix.py) is also the
table printed in docs/reliability.md (bench/chaos.py --markdown --with-tests).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skillbuild.skill import skillmd
from skillbuild.testing.matrix import FAULTS
from sqld_server import sqld, sqld_binary  # noqa: F401  (pytest fixtures)
from tests.conftest import ROOT, copy_examples
from vertex_server import fake_vertex_factory  # noqa: F401  (pytest fixture)

BUILT = {"deploy-checker": "plugins/devops/deploy-checker", "secret-sentry": "plugins/security/secret-sentry",
         "changelog-lint": "plugins/extras/changelog-lint"}
STUB = "---\nname: deploy-checker\ndescription: Hand-written stub kept until a valid file replaces it\n---\n\nStub.\n"


def vertex_env(doit_env: dict, url: str, **extra: str) -> dict:
    return {**doit_env, "SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": "fault-test-token",
            "GOOGLE_CLOUD_PROJECT": "p", "SKILLBUILD_RPM": "100000", "SKILLBUILD_SAFETY_FACTOR": "1",
            "SKILLBUILD_REQUEST_TIMEOUT": "1", "SKILLBUILD_MAX_ATTEMPTS": "3", "SKILLBUILD_RETRY_MAX_SECONDS": "10",
            "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05", **extra}


def run_doit(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def audit(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(next((tmp_path / "build").glob("*/audit.sqlite3")))
    conn.row_factory = sqlite3.Row
    return conn


def target(market: Path, name: str) -> Path:
    return market / BUILT[name] / "skills" / name / "SKILL.md"


def seed_stub(market: Path) -> Path:
    stub = target(market, "deploy-checker")
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB)
    return stub


def generated(market: Path, name: str) -> bool:
    path = target(market, name)
    return path.exists() and (skillmd.provenance(path.read_text()) or {}).get("generator") == "skillbuild-vertex"


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_ends_in_retry_or_clean_failure(fault, doit_env, market, tmp_path, fake_vertex_factory):
    server = fake_vertex_factory(faults=[fault.spec], hang_seconds=4.0, retry_delay=0.1)
    stub = seed_stub(market)
    run = run_doit(vertex_env(doit_env, server.url), "provider=vertex")
    out = run.stdout + run.stderr
    assert server.stats()["faults"].get(fault.name, 0) >= 1, "the fault never fired: nothing was tested"
    assert "Traceback" not in out and "fault-test-token" not in out
    db = audit(tmp_path)
    rows = db.execute("SELECT plugin_name, phase, status, error_class, error_message FROM enhancements "
                      "WHERE phase IN ('analyse', 'generate', 'repair')").fetchall()
    calls = db.execute("SELECT error FROM api_calls WHERE error IS NOT NULL").fetchall()
    if fault.expect == "fail":
        assert run.returncode in (1, 2), out  # 2: analysis failed so generation never ran (README)
        assert stub.read_text() == STUB  # the old file is kept
        assert not any(generated(market, name) for name in BUILT)
        failed = {r["plugin_name"] for r in rows if r["status"] == "failure" and r["error_class"] == fault.evidence}
        assert failed == set(BUILT), [dict(r) for r in rows]
        for name in BUILT:
            assert f"FAILED {name} (" in run.stdout and fault.summary in run.stdout
        assert f"failed {len(BUILT)}" in run.stdout
        if fault.evidence == "gate":
            assert len(list((tmp_path / "cache").glob("*/rejected/*.SKILL.md"))) == len(BUILT)
    else:
        assert run.returncode == 0, out
        assert f"built {len(BUILT)}, kept 1, skipped 1, failed 0" in run.stdout
        assert all(generated(market, name) for name in BUILT)
        if fault.expect == "retry":
            assert any(fault.evidence in r["error"] for r in calls), [r["error"] for r in calls]
        else:  # repair: the refused candidate is on record, then the repair's success
            assert server.stats()["repairs"] == 1
            refused = [r for r in rows if r["phase"] == "generate" and r["status"] == "failure"]
            assert len(refused) == 1 and fault.evidence in refused[0]["error_message"]
            assert (refused[0]["plugin_name"], "repair", "success") in {(r[0], r[1], r[2]) for r in rows}


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (as root); a disk cannot be filled for real without one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write until the filesystem refuses with ENOSPC."""
    filler = disk / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)  # unbuffered: nothing left to flush at close
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc
    finally:
        os.close(fd)
    return filler


def test_full_disk_fails_cleanly_then_a_rerun_succeeds(doit_env, small_disk, tmp_path, fake_vertex_factory):
    market = small_disk / "market"
    copy_examples(market)
    stub = seed_stub(market)
    filler = fill(small_disk)
    server = fake_vertex_factory()
    env = vertex_env({**doit_env, "SKILLBUILD_MARKETPLACE": str(market)}, server.url)
    run = run_doit(env, "provider=vertex")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "No space left on device" in run.stdout and "the file is unchanged" in run.stdout
    assert "failed 3" in run.stdout and "Traceback" not in run.stderr
    assert stub.read_text() == STUB
    assert list(market.rglob(".skillbuild-*.tmp")) == []  # the failed write removed its temp file
    rows = audit(tmp_path).execute("SELECT plugin_name, error_message FROM enhancements WHERE phase = 'generate' "
                                   "AND status = 'failure' AND error_class = 'OSError'").fetchall()
    assert {r[0] for r in rows} == set(BUILT) and all("No space left on device" in r[1] for r in rows)
    paid = server.stats()["requests_total"]
    filler.unlink()  # the maintainer frees space and runs again
    again = run_doit(env, "provider=vertex")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "built 3" in again.stdout
    assert server.stats()["requests_total"] == paid  # the answers came from the response cache
    assert all(generated(market, name) for name in BUILT)
    backups = [p for p in (tmp_path / "build").rglob("SKILL.md") if "backups" in p.parts]
    assert any(p.read_text() == STUB for p in backups)


# ----------------------------------------------------------------------------- Turso dies mid-upload


def chunk_count(server) -> int:
    import libsql

    conn = libsql.connect(server.url, auth_token=server.token)
    try:
        return conn.execute("SELECT COUNT(*) FROM archive_chunks").fetchone()[0]
    except Exception:  # the table does not exist before the first upload starts
        return 0


def test_turso_dying_mid_upload_keeps_the_local_backup_and_a_rerun_completes(doit_env, market, tmp_path, sqld):
    (market / "plugins/devops/deploy-checker/assets").mkdir()
    (market / "plugins/devops/deploy-checker/assets/blob.bin").write_bytes(os.urandom(6 << 20))  # ~100 chunks
    env = {**doit_env, "TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token,
           "SKILLBUILD_BACKUP_CHUNK_SIZE": str(64 << 10)}
    cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "backup"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while chunk_count(sqld) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the upload ended before the server could be killed"
    sqld.kill()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "off-site copy failed" in out and "the local backup is kept at" in out
    assert sqld.token not in out and "Traceback" not in out
    local = out.split("the local backup is kept at ", 1)[1].split()[0]
    assert Path(local).is_dir()
    sqld.start()  # the same database: the chunks sent before the crash are still there
    again = run_doit(env, "backup")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "complete" in again.stdout and sqld.token not in again.stdout
    listing = run_doit(env, "backups", "verify=1")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "complete" in listing.stdout
    (db,) = (tmp_path / "build").glob("*/audit.sqlite3")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT status, error_class, backup_path FROM enhancements WHERE phase = 'backup' "
                            "ORDER BY id").fetchall()
    assert [(status, error_class) for status, error_class, _ in rows] == [("failure", "offsite"), ("success", None)]
    assert rows[0][2] == local  # the failure row names the local backup that was kept


def test_full_cache_disk_keeps_every_paid_answer_and_a_rerun_pays_nothing_again(doit_env, small_disk, tmp_path,
                                                                                fake_vertex_factory):
    """The response cache's disk is full: each answer goes to the spill folder, the plugin fails with one line
    naming the full disk, the call is recorded, doit's state failure is one line, and the exit status is not 3."""
    server = fake_vertex_factory()
    env = vertex_env({**doit_env, "SKILLBUILD_CACHE_ROOT": str(small_disk / "cache")}, server.url)
    filler = fill(small_disk)
    first = run_doit(env, "provider=vertex")  # not even doit's state file can be made: one line, exit 1
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stdout + first.stderr
    assert first.stderr.startswith("skillbuild: cannot create doit's state file: disk full at ")
    assert server.stats()["requests_total"] == 0
    filler.unlink()
    assert run_doit(env, "list").returncode == 0  # the cache folder and doit's state file exist, as after any run
    filler = fill(small_disk)
    run = run_doit(env, "provider=vertex")
    out = run.stdout + run.stderr
    assert run.returncode in (1, 2), out  # 2: analyses failed, so generations never ran (README); never 3
    assert "Traceback" not in out
    paid = server.stats()["requests_total"]
    assert paid == len(BUILT)  # one analysis each
    for name in BUILT:
        line = next(ln for ln in run.stdout.splitlines() if ln.startswith(f"FAILED {name} "))
        assert f"disk full at {small_disk}" in line and "the answer is kept at " in line, line
    assert "skillbuild: doit could not save its state (disk full at" in run.stderr
    db = audit(tmp_path)
    assert [tuple(r) for r in db.execute("SELECT exit_status FROM runs")] == [(run.returncode,)]
    assert db.execute("SELECT COUNT(*) FROM api_calls WHERE outcome = 'answered'").fetchone()[0] == paid
    rows = db.execute("SELECT plugin_name, attempts, input_tokens FROM enhancements WHERE error_class = 'disk_full'")
    assert {(r[0], r[1]) for r in rows} == {(name, 1) for name in BUILT}  # the call is on the failed step's row
    spilled = list((tmp_path / "build").glob("*/responses-spilled/??/*.json"))
    assert len(spilled) == paid

    filler.unlink()  # the maintainer frees space and runs again
    again = run_doit(env, "provider=vertex")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "built 3" in again.stdout and all(generated(small_disk.parent / "market", n) for n in BUILT)
    assert server.stats()["requests_total"] == paid + len(BUILT)  # the kept analyses are not paid again
    assert not any(p.exists() for p in spilled)  # moved back into the cache once it had room


def test_full_build_disk_fails_in_one_line_and_the_recorded_exit_status_is_the_process_one(
        doit_env, small_disk, tmp_path, fake_vertex_factory):
    """The build folder (audit DB, logs) fills up: no traceback, never 3, and runs.exit_status is the exit code
    (or stderr says the audit DB could not record it)."""
    fill(small_disk)
    server = fake_vertex_factory()
    env = vertex_env({**doit_env, "SKILLBUILD_BUILD_ROOT": str(small_disk / "build")}, server.url)
    run = run_doit(env, "provider=vertex")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr and server.stats()["requests_total"] == 0
    assert run.stderr.startswith("skillbuild: the run could not start: cannot open the audit DB ")
    assert "database or disk is full" in run.stderr and len(run.stderr.strip().splitlines()) == 1

    started = 0
    for leave in (160 << 10, 200 << 10, 280 << 10):  # room for the first writes only: the disk fills mid-run
        free_up(small_disk, leave)
        run = run_doit(env, "provider=vertex")
        out = run.stdout + run.stderr
        assert run.returncode not in (0, 3) and "Traceback" not in out, out
        if "skillbuild: the run could not start:" in run.stderr:
            continue
        started += 1
        recorded = _exit_statuses(small_disk)
        assert recorded == [run.returncode] or "the audit DB could not record this run's end" in run.stderr, out
        failed = [ln for ln in run.stdout.splitlines() if ln.startswith("FAILED ")]
        assert all("disk full at " in ln for ln in failed), "\n".join(failed)  # each plugin's reason names the full disk
        fill(small_disk)
    assert started, "no run got far enough to fill the disk mid-run"


def test_a_write_the_full_disk_refuses_names_where_it_was_going(small_disk, tmp_path):
    """A write to an open file raises ENOSPC naming no file; the atomic write and the plugin backup name the path
    they were writing, so the one-line reason says which disk is full."""
    from skillbuild.safety import backup
    from skillbuild.store import writing

    fill(small_disk)
    free_up(small_disk, 8 << 10)  # room for a file's inode and first block, not for its content
    with pytest.raises(OSError) as caught:
        writing.atomic_write(small_disk / "SKILL.md", b"x" * (64 << 10))
    assert writing.write_failure(caught.value).startswith(f"disk full at {small_disk}/"), caught.value
    assert not list(small_disk.glob(f"{writing.TEMP_PREFIX}*"))

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "README.md").write_text("a plugin\n")
    fill(small_disk)
    free_up(small_disk, 4 << 10)  # the copied file fits, the backup's manifest beside it does not
    with pytest.raises(OSError) as caught:
        backup.backup_plugin(small_disk / "backups", "run1", "p", plugin)
    assert writing.write_failure(caught.value).startswith(f"disk full at {small_disk}/backups/"), caught.value
    assert not list((small_disk / "backups").rglob("*.partial-*"))


def test_an_sqlite_io_error_on_a_full_disk_is_a_full_disk(small_disk, tmp_path):
    """SQLite reports some refused writes (its WAL index, a sync) as SQLITE_IOERR_*, not SQLITE_FULL: on a disk
    with no room left the one-line reason still says "disk full at PATH"; elsewhere it stays an I/O error."""
    from skillbuild.store import writing

    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = sqlite3.SQLITE_IOERR | (3 << 8)  # SQLITE_IOERR_WRITE, as the C module sets it
    fill(small_disk)
    assert writing.write_failure(error, small_disk / "build" / "throttle.sqlite3").startswith(
        f"disk full at {small_disk}/build/throttle.sqlite3")
    assert not writing.no_room(error)  # no path: nothing to look at
    assert writing.write_failure(error, tmp_path / "throttle.sqlite3").startswith("cannot write ")


def free_up(disk: Path, size: int) -> None:
    """Make `size` bytes free again on the filled disk."""
    filler = disk / "filler.bin"
    os.truncate(filler, max(0, filler.stat().st_size - size))


def _exit_statuses(disk: Path) -> list:
    try:
        with sqlite3.connect(next(disk.glob("build/*/audit.sqlite3"))) as conn:
            return [r[0] for r in conn.execute("SELECT exit_status FROM runs ORDER BY started DESC LIMIT 1")]
    except (StopIteration, sqlite3.Error):
        return []
