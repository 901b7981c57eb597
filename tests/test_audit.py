"""The audit DB: every outcome lands, kills lose nothing committed, migrations keep rows, no secret lands."""
from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skillbuild.store.audit import (
    MIGRATIONS, PHASES, README_QUERIES, SCHEMA_VERSION, AuditDB, AuditError, readme_queries_markdown, redact,
)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def seed_v1(path: Path, user_version: int) -> None:
    """A database as the seed left it: only the enhancements table, every row a success."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE enhancements (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL,
           plugin_name TEXT NOT NULL, plugin_path TEXT, enhancement_type TEXT, status TEXT NOT NULL,
           processing_time_seconds REAL);"""
    )
    conn.executemany(
        "INSERT INTO enhancements (timestamp, plugin_name, plugin_path, enhancement_type, status,"
        " processing_time_seconds) VALUES (?, ?, ?, 'skill_md', 'success', ?)",
        [(f"2025-01-0{i}T00:00:00Z", f"seed-{i}", f"/m/seed-{i}", float(i)) for i in range(1, 6)],
    )
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()


def test_every_outcome_lands_with_its_fields(tmp_path):
    db = AuditDB(tmp_path / "audit.sqlite3")
    run = db.start_run(["doit", "-n", "2"])
    cases = [
        ("ok", "analyse", "success"), ("ok", "generate", "success"),
        ("bad-analyse", "analyse", "failure"),
        ("bad-generate", "analyse", "success"), ("bad-generate", "generate", "failure"),
        ("bad-repair", "analyse", "success"), ("bad-repair", "generate", "failure"), ("bad-repair", "repair", "failure"),
        ("fixed", "analyse", "success"), ("fixed", "generate", "failure"), ("fixed", "repair", "success"),
        ("ext", "skip", "skipped"), ("hand", "keep", "kept"),
        ("back", "restore", "success"), ("back2", "restore", "failure"),
        ("market", "backup", "success"), ("market", "backup", "failure"),  # never counted as plugin outcomes
    ]
    for plugin, phase, status in cases:
        db.record(run, plugin, f"/m/{plugin}", phase, status, provider="offline", model="m1",
                  prompt_hash="a" * 64, input_hash="b" * 64, output_hash="c" * 64 if status == "success" else None,
                  output_bytes=9000 if phase in ("generate", "repair") and status == "success" else None,
                  input_tokens=100, output_tokens=50, attempts=1, processing_time_seconds=1.5,
                  error_class="GateError" if status == "failure" else None,
                  error_message=f"{phase} failed" if status == "failure" else None,
                  backup_path="/b/x" if phase == "repair" else None)
    rows = db.query("SELECT plugin_name, phase, status FROM enhancements ORDER BY id")
    assert [tuple(r) for r in rows] == cases
    assert {p for _, p, _ in cases} == set(PHASES)
    last = db.last_outcomes()
    assert (last["fixed"].phase, last["fixed"].status) == ("repair", "success")
    assert (last["bad-repair"].phase, last["bad-repair"].error_class) == ("repair", "GateError")
    assert last["hand"].status == "kept" and last["ext"].status == "skipped"
    # final outcomes: ok + fixed built; bad-analyse, bad-generate, bad-repair failed; restores not counted
    assert db.success_rate() == (2, 3, 40.0)
    assert db.outcomes_per_run() == [(run, {"success": 2, "failure": 3, "skipped": 1, "kept": 1})]
    db.end_run(run, {"built": 2, "kept": 1, "skipped": 1, "failed": 3}, 1)
    (r,) = db.runs()
    assert (r["built"], r["kept"], r["skipped"], r["failed"], r["exit_status"]) == (2, 1, 1, 3, 1)
    assert r["arguments"] == ["doit", "-n", "2"] and r["ended"] is not None


def test_bad_input_is_refused_with_the_allowed_values(tmp_path):
    db = AuditDB(tmp_path / "a.db")
    with pytest.raises(ValueError, match="analyse, generate"):
        db.record("r", "p", None, "write", "success")
    with pytest.raises(ValueError, match="success, failure"):
        db.record("r", "p", None, "generate", "ok")
    with pytest.raises(TypeError, match="colour"):
        db.record("r", "p", None, "generate", "success", colour="red")
    with pytest.raises(AuditError, match="start_run"):
        db.end_run("no-such-run", {}, 0)
    assert db.query("SELECT COUNT(*) FROM enhancements")[0][0] == 0


def test_api_attempts_land_with_retry_flags(tmp_path):
    db = AuditDB(tmp_path / "a.db")
    run = db.start_run([])
    n = db.record_api_calls(run, "p", "generate", [
        {"time": time.time(), "status": 429, "latency_seconds": 0.2, "error": "RESOURCE_EXHAUSTED"},
        {"time": time.time(), "status": None, "latency_seconds": 30.0, "error": "timeout"},
        {"time": "2026-01-15T10:15:00.123+00:00", "status": 200, "latency_s": 1.1, "input_tokens": 900,
         "output_tokens": 300, "retried": False},  # the provider's own record shape
    ])
    assert n == 3
    rows = db.query("SELECT status, retried, error, input_tokens, latency_seconds FROM api_calls ORDER BY id")
    assert [tuple(r) for r in rows] == [(429, 1, "RESOURCE_EXHAUSTED", None, 0.2), (None, 1, "timeout", None, 30.0),
                                        (200, 0, None, 900, 1.1)]
    assert db.query("SELECT time FROM api_calls WHERE status = 200")[0][0] == "2026-01-15T10:15:00.123Z"
    days = db.calls_per_day()
    assert [(d["day"], d["calls"], d["errors"], d["retried"], d["input_tokens"]) for d in days][0] == (
        "2026-01-15", 1, 0, 0, 900)
    assert sum(d["calls"] for d in days) == 3 and sum(d["retried"] for d in days) == 2


def test_no_secret_reaches_the_file(tmp_path):
    listed = "s3cr3t-listed-value-42"
    jwt = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJhIjoicncifQ.c2lnbmF0dXJlLWJ5dGVz"
    google = "AIzaSyD" + "x" * 32
    oauth = "ya29.a0AfB_byCdeFgHiJkLmNoPqRsT"
    path = tmp_path / "audit.sqlite3"
    db = AuditDB(path, secrets=[listed])
    run = db.start_run(["doit", f"vertex_token={oauth}", f"--key={google}"])
    db.record(run, "p", "/m/p", "generate", "failure", error_class="ClientError",
              error_message=f"401 Authorization: Bearer {jwt} rejected; key {google}; env {listed}")
    db.record_api_calls(run, "p", "generate", [{"status": 401, "error": f"token {oauth} expired"}],
                        secrets=["another-secret-999"])
    db.record(run, "p", "/m/p", "repair", "failure", error_message="echo another-secret-999",
              secrets=["another-secret-999"])
    db.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("audit.sqlite3"))
    for secret in (listed, jwt, google, oauth, "another-secret-999"):
        assert secret.encode() not in blob, secret
    msg = AuditDB(path).query("SELECT error_message FROM enhancements ORDER BY id")[0][0]
    assert msg.startswith("401 Authorization: [REDACTED]") and "rejected" in msg


def test_redact_keeps_hashes_and_counts():
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    text = f"sha256 {digest} max_output_tokens: 8192 author: Jane"
    assert redact(text) == text
    assert redact("password=hunter2xyz next") == "password=[REDACTED] next"
    assert redact("a x b", secrets=["x"]) == "a x b"  # too short to be a credential: left alone


WRITER = """
import sys
from skillbuild.store.audit import AuditDB
db = AuditDB(sys.argv[1])
run = sys.argv[2]
i = 0
while True:
    rid = db.record(run, f"p{i % 7}", "/m/p", "generate", "success", processing_time_seconds=0.01, output_bytes=i)
    print(rid, flush=True)
    i += 1
"""


def test_sigkill_mid_stream_loses_no_committed_row(tmp_path):
    path = tmp_path / "audit.sqlite3"
    run = AuditDB(path).start_run(["kill-test"])
    proc = subprocess.Popen([PY, "-c", WRITER, str(path), run], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    committed = []
    deadline = time.monotonic() + 60
    while len(committed) < 200 and time.monotonic() < deadline:
        committed.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(committed) == 200
    # open a copy cold, as after a crash: the WAL must be replayed from disk
    crash = tmp_path / "crash"
    crash.mkdir()
    for p in tmp_path.iterdir():
        if p.is_file():
            shutil.copy2(p, crash / p.name)
    db = AuditDB(crash / "audit.sqlite3")
    assert db.query("PRAGMA integrity_check")[0][0] == "ok"
    ids = {r[0] for r in db.query("SELECT id FROM enhancements")}
    assert set(committed) <= ids
    assert db.query("SELECT COUNT(*) FROM enhancements WHERE run_id = ?", (run,))[0][0] == len(ids)


def test_concurrent_worker_processes_all_land(tmp_path):
    path = tmp_path / "audit.sqlite3"
    AuditDB(path)
    script = (
        "import sys\nfrom skillbuild.store.audit import AuditDB\ndb = AuditDB(sys.argv[1])\n"
        "for i in range(150):\n"
        "    db.record('r', f'w{sys.argv[2]}-{i}', None, 'analyse', 'success')\n"
        "    db.record_api_calls('r', f'w{sys.argv[2]}', 'analyse', [{'status': 200}, {'status': 200}])\n"
    )
    procs = [subprocess.Popen([PY, "-c", script, str(path), str(w)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    db = AuditDB(path)
    assert db.query("SELECT COUNT(*) FROM enhancements")[0][0] == 600
    assert db.query("SELECT COUNT(*) FROM api_calls")[0][0] == 1200
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"


@pytest.mark.parametrize("seed_version", [0, 1])
def test_migration_from_the_seed_schema_keeps_rows(tmp_path, seed_version):
    path = tmp_path / "audit.sqlite3"
    seed_v1(path, seed_version)
    db = AuditDB(path)
    assert db.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    rows = db.query("SELECT plugin_name, status, phase, processing_time_seconds, run_id FROM enhancements ORDER BY id")
    assert [tuple(r) for r in rows] == [(f"seed-{i}", "success", "generate", float(i), None) for i in range(1, 6)]
    run = db.start_run(["after-migration"])
    db.record(run, "new", None, "analyse", "failure", error_class="X")
    db.close()
    again = AuditDB(path)  # reopening applies nothing twice
    assert again.schema_version() == SCHEMA_VERSION
    assert again.query("SELECT COUNT(*) FROM enhancements")[0][0] == 6
    # seed rows have no run id: they are one "(seed)" run of 5 successes
    assert ("(seed)", {"success": 5, "failure": 0, "skipped": 0, "kept": 0}) in again.outcomes_per_run()


def test_a_newer_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "audit.sqlite3"
    AuditDB(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match=rf"{re.escape(str(path))}.*newer than this skillbuild knows"):
        AuditDB(path)


def test_run_ids_sort_by_time():
    from skillbuild.store.audit import new_run_id
    a, b = new_run_id(1_800_000_000), new_run_id(1_800_000_001)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", a) and a < b


# --- README queries -------------------------------------------------------------------------------------

def populate_for_readme(path: Path) -> AuditDB:
    """Two build runs and a restore; figures below are what the README queries must print."""
    db = AuditDB(path)
    old = db.start_run(["doit"], run_id="20261101T000000Z-aaaa")
    db.record(old, "a", None, "analyse", "success", processing_time_seconds=2.0)
    db.record(old, "a", None, "generate", "failure", processing_time_seconds=9.0, error_class="GateError",
              error_message="too short")
    db.record(old, "b", None, "analyse", "failure", error_class="ProviderError", error_message="old failure")
    new = db.start_run(["doit"], run_id="20261102T000000Z-bbbb")
    db.record(new, "a", None, "analyse", "success", processing_time_seconds=4.0)
    db.record(new, "a", None, "generate", "success", processing_time_seconds=6.0)
    db.record(new, "b", None, "analyse", "success", processing_time_seconds=3.0)
    db.record(new, "b", None, "generate", "failure", processing_time_seconds=5.0, error_class="GateError",
              error_message="missing frontmatter")
    db.record(new, "b", None, "repair", "success", processing_time_seconds=4.0)
    db.record(new, "c", None, "analyse", "failure", error_class="ProviderError", error_message="403 permission")
    db.record(new, "d", None, "keep", "kept")
    db.record(new, "e", None, "skip", "skipped")
    rest = db.start_run(["doit", "restore"], run_id="20261103T000000Z-cccc")
    db.record(rest, "a", None, "restore", "failure", error_class="BackupError", error_message="tampered")
    now = time.time()
    db.record_api_calls(new, "a", "generate", [
        {"time": now, "status": 429, "error": "quota"},
        {"time": now, "status": 200, "input_tokens": 100, "output_tokens": 40},
        {"time": now, "status": 200, "input_tokens": 50, "output_tokens": 10},
    ])
    db.record_api_calls(old, "a", "generate", [{"time": now - 3 * 86400, "status": 200, "input_tokens": 999}])
    return db


def run_readme_blocks(db_path: Path) -> list[str]:
    """Run each ```sh block of the README section through a shell, exactly as printed."""
    text = readme_queries_markdown()  # as the README prints it, with the DB path in $AUDIT_DB
    blocks = re.findall(r"```sh\n(.*?)\n```", text, re.S)[1:]  # the first sets AUDIT_DB
    assert len(blocks) == len(README_QUERIES)
    if shutil.which("sqlite3"):
        env = {**os.environ, "AUDIT_DB": str(db_path)}
        return [subprocess.run(["bash", "-c", b], capture_output=True, text=True, check=True, timeout=30,
                               env=env).stdout for b in blocks]
    conn = sqlite3.connect(db_path)  # no CLI: same SQL text through Python, printed the CLI's way
    out = []
    for _title, sql in README_QUERIES:
        cur = conn.execute(sql)
        head = [c[0] for c in cur.description]
        rows = [["" if v is None else str(v) for v in r] for r in cur.fetchall()]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        out.append("\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n")
    return out


def parse_columns(output: str) -> list[dict[str, str]]:
    """sqlite3 -header -column output: the dash line gives each column's width."""
    lines = output.rstrip("\n").splitlines()
    spans, pos = [], 0
    for dashes in lines[1].split("  "):
        spans.append((pos, pos + len(dashes)))
        pos += len(dashes) + 2
    cut = lambda line: [line[a:b].strip() if i < len(spans) - 1 else line[a:].strip()  # noqa: E731
                        for i, (a, b) in enumerate(spans)]
    head = cut(lines[0])
    return [dict(zip(head, cut(line))) for line in lines[2:]]


def test_readme_queries_run_as_printed_and_give_the_figures(tmp_path):
    path = tmp_path / "audit.sqlite3"
    populate_for_readme(path).close()
    rate, avg, today, fails = (parse_columns(o) for o in run_readme_blocks(path))
    # final outcomes: old run a failed, b failed; new run a built, b built (repair), c failed; d kept, e skipped
    assert rate == [{"built": "2", "failed": "3", "success_pct": "40.0"}]
    assert avg == [
        {"phase": "analyse", "steps": "3", "avg_seconds": "3.0"},  # 2.0 (old a), 4.0 and 3.0 (new a, b)
        {"phase": "generate", "steps": "1", "avg_seconds": "6.0"},
        {"phase": "repair", "steps": "1", "avg_seconds": "4.0"},
    ]
    assert today == [{"calls": "3", "errors": "1", "input_tokens": "150", "output_tokens": "50"}]
    assert fails == [
        {"plugin_name": "b", "phase": "generate", "error_class": "GateError", "error_message": "missing frontmatter"},
        {"plugin_name": "c", "phase": "analyse", "error_class": "ProviderError", "error_message": "403 permission"},
    ]
    db = AuditDB(path)
    assert db.success_rate() == (2, 3, 40.0)  # the report uses the same SQL
    assert db.last_build_run() == "20261102T000000Z-bbbb"
