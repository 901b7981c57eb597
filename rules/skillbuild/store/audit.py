"""The audit trail: one SQLite file (WAL) recording every run, every phase outcome and every API attempt.

Why SQLite in WAL mode with one commit per event: an overnight run can be killed at any moment (SIGKILL,
OOM, a reboot); each event is committed on its own, so whatever was recorded before the kill is still
there. Several doit worker processes (`doit -n N`) write at once; each waits on the lock (busy timeout)
instead of failing. A connection is opened per process, never shared across a fork.

Schema changes are forward migrations in `MIGRATIONS` (plain SQL, applied in order inside one
transaction); `PRAGMA user_version` holds how many have been applied. Version 1 is the seed's
`enhancements` table, so opening a seed database upgrades it in place and keeps its rows.

Vocabulary (shared with ui/progress.py and ui/report.py):
  phase:  analyse | generate | repair | skip | keep | restore
  status: success | failure | skipped | kept

Nothing secret is stored: every text value goes through `redact()` (bearer tokens, JWTs, API keys,
`token=...` style assignments, and any string the caller lists in `secrets=`).

The queries a maintainer runs with the sqlite3 CLI are in `README_QUERIES`; `readme_queries_markdown()`
prints them as the README shows them, and tests run each one through the CLI.
"""
from __future__ import annotations

import json
import os
import secrets as _random
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skillbuild.store import sqlite

PHASES = ("analyse", "generate", "repair", "skip", "keep", "restore", "backup")
STATUSES = ("success", "failure", "skipped", "kept")
BUSY_TIMEOUT_SECONDS = 60.0  # workers wait this long for the write lock before failing
MAX_TEXT = 4000  # error messages longer than this are cut: the trail is for reading, not for dumps

# Forward migrations: MIGRATIONS[i] brings a database from version i to version i + 1.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "1: the seed's enhancements table",
        [
            """CREATE TABLE IF NOT EXISTS enhancements (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                timestamp TEXT NOT NULL,
                plugin_name TEXT NOT NULL,
                plugin_path TEXT,
                enhancement_type TEXT,
                status TEXT NOT NULL,
                processing_time_seconds REAL
            )""",
        ],
    ),
    (
        "2: full trail: run id, phase, provider, hashes, tokens, errors, backups; runs; api_calls",
        [
            "ALTER TABLE enhancements ADD COLUMN run_id TEXT",
            "ALTER TABLE enhancements ADD COLUMN phase TEXT",
            "ALTER TABLE enhancements ADD COLUMN provider TEXT",
            "ALTER TABLE enhancements ADD COLUMN model TEXT",
            "ALTER TABLE enhancements ADD COLUMN prompt_hash TEXT",
            "ALTER TABLE enhancements ADD COLUMN input_hash TEXT",
            "ALTER TABLE enhancements ADD COLUMN output_hash TEXT",
            "ALTER TABLE enhancements ADD COLUMN output_bytes INTEGER",
            "ALTER TABLE enhancements ADD COLUMN input_tokens INTEGER",
            "ALTER TABLE enhancements ADD COLUMN output_tokens INTEGER",
            "ALTER TABLE enhancements ADD COLUMN attempts INTEGER",
            "ALTER TABLE enhancements ADD COLUMN error_class TEXT",
            "ALTER TABLE enhancements ADD COLUMN error_message TEXT",
            "ALTER TABLE enhancements ADD COLUMN backup_path TEXT",
            # Seed rows predate phases: they were generation results.
            "UPDATE enhancements SET phase = 'generate' WHERE phase IS NULL",
            "CREATE INDEX IF NOT EXISTS enhancements_run ON enhancements (run_id, plugin_name)",
            "CREATE INDEX IF NOT EXISTS enhancements_plugin ON enhancements (plugin_name, id)",
            """CREATE TABLE runs (
                id TEXT PRIMARY KEY,
                started TEXT NOT NULL,
                ended TEXT,
                arguments TEXT NOT NULL,
                built INTEGER,
                kept INTEGER,
                skipped INTEGER,
                failed INTEGER,
                counts TEXT,
                exit_status INTEGER
            )""",
            """CREATE TABLE api_calls (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id TEXT,
                plugin_name TEXT,
                phase TEXT,
                time TEXT NOT NULL,
                status INTEGER,
                latency_seconds REAL,
                input_tokens INTEGER,
                output_tokens INTEGER,
                retried INTEGER NOT NULL DEFAULT 0,
                error TEXT
            )""",
            "CREATE INDEX api_calls_time ON api_calls (time)",
        ],
    ),
    (
        "3: how many credential-looking values were redacted from a step's inputs (never the values)",
        ["ALTER TABLE enhancements ADD COLUMN redacted_count INTEGER"],
    ),
    (
        "4: batch prediction jobs (`doit batch`), and api_calls rows marked online or batch",
        [
            """CREATE TABLE batch_jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                phase TEXT NOT NULL,
                request_hash TEXT NOT NULL,
                request_count INTEGER NOT NULL,
                input_uri TEXT NOT NULL,
                output_uri TEXT NOT NULL,
                display_name TEXT NOT NULL,
                state TEXT NOT NULL,
                job_name TEXT,
                run_id TEXT,
                created TEXT NOT NULL,
                updated TEXT NOT NULL,
                succeeded INTEGER,
                failed INTEGER
            )""",
            "CREATE INDEX batch_jobs_hash ON batch_jobs (phase, request_hash)",
            "ALTER TABLE api_calls ADD COLUMN mode TEXT NOT NULL DEFAULT 'online'",
            "ALTER TABLE api_calls ADD COLUMN cost_usd REAL",
        ],
    ),
    (
        "5: each API attempt written before it is sent (outcome sent -> answered | failed, or unknown when the "
        "run died with it in flight); how a run ended (ended, or killed: closed by a later run)",
        [
            "ALTER TABLE api_calls ADD COLUMN outcome TEXT",
            "ALTER TABLE runs ADD COLUMN status TEXT",
        ],
    ),
]
# api_calls.outcome: NULL on rows from before version 4 (written after the answer, so known).
OUTCOME_SENT, OUTCOME_ANSWERED, OUTCOME_FAILED, OUTCOME_UNKNOWN = "sent", "answered", "failed", "unknown"
# runs.status; NULL while a run is open. A killed run keeps `ended` and `exit_status` empty: neither is known.
RUN_ENDED, RUN_KILLED = "ended", "killed"
SCHEMA_VERSION = len(MIGRATIONS)

ENHANCEMENT_FIELDS = (
    "enhancement_type", "processing_time_seconds", "provider", "model", "prompt_hash", "input_hash",
    "output_hash", "output_bytes", "input_tokens", "output_tokens", "attempts", "error_class",
    "error_message", "backup_path", "redacted_count",
)

# Queries printed in the README, exactly as a maintainer types them after `sqlite3 "$AUDIT_DB"`.
# Times are UTC. A plugin's outcome in a run is its last row in that run; a successful analysis alone is
# a step, not an outcome, and restores are not builds.
README_QUERIES: list[tuple[str, str]] = [
    (
        "Success rate (each plugin's final outcome per run; skipped and kept plugins left out)",
        """SELECT SUM(status = 'success') AS built, SUM(status = 'failure') AS failed,
       ROUND(100.0 * SUM(status = 'success') / NULLIF(SUM(status IN ('success', 'failure')), 0), 1) AS success_pct
FROM enhancements
WHERE id IN (SELECT MAX(id) FROM enhancements
             WHERE phase NOT IN ('restore', 'backup') AND NOT (phase = 'analyse' AND status = 'success')
             GROUP BY run_id, plugin_name);""",
    ),
    (
        "Average time per phase (successful steps, seconds)",
        """SELECT phase, COUNT(*) AS steps, ROUND(AVG(processing_time_seconds), 2) AS avg_seconds
FROM enhancements
WHERE status = 'success' AND phase IN ('analyse', 'generate', 'repair')
GROUP BY phase ORDER BY phase;""",
    ),
    (
        "API calls today (UTC day; every HTTP attempt, retries included)",
        """SELECT COUNT(*) AS calls, COALESCE(SUM(error IS NOT NULL), 0) AS errors,
       COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens
FROM api_calls WHERE date(time) = date('now');""",
    ),
    (
        "Failures of the last build run",
        """SELECT plugin_name, phase, error_class, error_message
FROM enhancements
WHERE status = 'failure'
  AND run_id = (SELECT run_id FROM enhancements WHERE phase NOT IN ('restore', 'backup') ORDER BY id DESC LIMIT 1)
ORDER BY id;""",
    ),
]


def readme_queries_markdown(db_path: str = '"$AUDIT_DB"') -> str:
    """The README section body: one fenced block per query, runnable as printed (after setting AUDIT_DB)."""
    parts = []
    if db_path == '"$AUDIT_DB"':
        parts.append("From the project folder, point `AUDIT_DB` at the audit DB of the marketplace built last "
                     "(each marketplace has its own, `build/<marketplace id>/audit.sqlite3`):\n\n```sh\n"
                     "export AUDIT_DB=\"$(ls -t build/*/audit.sqlite3 | head -n 1)\"\n```\n")
    for title, sql in README_QUERIES:
        parts.append(f"{title}:\n\n```sh\nsqlite3 -header -column {db_path} \"\n{sql}\"\n```\n")
    return "\n".join(parts)


# --- redaction -------------------------------------------------------------------------------------

# The patterns live in skill/secrets.py, shared with the prompt inputs and the output gate.
from skillbuild.skill.secrets import REDACTED, redact  # noqa: E402,F401  (re-exported)


# --- helpers ---------------------------------------------------------------------------------------

def utc_now() -> str:
    """UTC timestamp SQLite's date functions understand, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id(now: float | None = None) -> str:
    """Sortable run id: UTC second plus a random suffix, e.g. 20261129T101500Z-ab12."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{_random.token_hex(2)}"


def _as_time(value: Any) -> str:
    """Attempt times arrive as epoch seconds or ISO text; store ISO UTC."""
    if value is None:
        return utc_now()
    if isinstance(value, (int, float)):
        dt = datetime.fromtimestamp(value, timezone.utc)
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = str(value)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass(frozen=True)
class Outcome:
    """A plugin's most recent audit row, for `doit status`."""

    plugin_name: str
    run_id: str | None
    phase: str | None
    status: str
    timestamp: str
    error_class: str | None
    error_message: str | None
    output_bytes: int | None


class AuditError(Exception):
    """The audit DB cannot be opened or written; the message names the file."""


class AuditDB:
    """The audit trail at `path` (created and migrated on first use)."""

    def __init__(self, path: str | os.PathLike, secrets: Iterable[str] = (), *, read_only: bool = False):
        self.path = Path(path)
        self.secrets = [s for s in secrets if s]
        self.read_only = read_only
        self._conns = sqlite.PerProcess(self._open)
        self.connection()  # open and migrate now, so a bad path fails early with its name

    @classmethod
    def reader(cls, path: str | os.PathLike) -> "AuditDB | None":
        """The DB opened read-only (nothing created, nothing migrated), or None when it does not exist yet."""
        return cls(path, read_only=True) if Path(path).is_file() else None

    # connection and schema ------------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This process's (and thread's) connection; a forked doit worker opens its own."""
        return self._conns.get()

    def _open(self) -> sqlite3.Connection:
        try:
            # FULL: each commit reaches the disk, so a kill loses nothing.
            conn = sqlite.connect(self.path, busy_timeout=BUSY_TIMEOUT_SECONDS, synchronous="FULL",
                                  read_only=self.read_only)
            if not self.read_only:
                migrate(conn)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(
                f"cannot open the audit DB {self.path}: {exc}. Check the folder is writable and the file is "
                f"an SQLite database (move a damaged file aside; a new one is created)."
            ) from exc
        return conn

    def close(self) -> None:
        self._conns.close_all()

    def schema_version(self) -> int:
        return self.connection().execute("PRAGMA user_version").fetchone()[0]

    # writes (one commit each) -----------------------------------------------------------------------

    def _clean(self, value: Any, secrets: Sequence[str] = ()) -> Any:
        if isinstance(value, str):
            return redact(value, [*self.secrets, *secrets])[:MAX_TEXT]
        return value

    def start_run(self, arguments: Sequence[str], run_id: str | None = None, secrets: Sequence[str] = ()) -> str:
        """Record the start of a run; returns its id (new unless given)."""
        run_id = run_id or new_run_id()
        args = json.dumps([self._clean(str(a), secrets) for a in arguments])
        self.connection().execute(
            "INSERT INTO runs (id, started, arguments) VALUES (?, ?, ?)", (run_id, utc_now(), args)
        )
        return run_id

    def run_usage(self, run_id: str, plugin: str) -> dict[str, int]:
        """HTTP attempts and tokens one plugin spent in one run."""
        row = self.connection().execute(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0) FROM api_calls "
            "WHERE run_id = ? AND plugin_name = ?", (run_id, plugin)).fetchone()
        return {"calls": row[0], "input_tokens": row[1], "output_tokens": row[2]}

    def end_run(self, run_id: str, counts: dict[str, int], exit_status: int) -> None:
        """Close a run with its counts (built/kept/skipped/failed, extra keys kept in `counts`)."""
        cur = self.connection().execute(
            "UPDATE runs SET ended = ?, built = ?, kept = ?, skipped = ?, failed = ?, counts = ?, exit_status = ?,"
            " status = ? WHERE id = ?",
            (
                utc_now(), counts.get("built", 0), counts.get("kept", 0), counts.get("skipped", 0),
                counts.get("failed", 0), json.dumps(counts, sort_keys=True), exit_status, RUN_ENDED, run_id,
            ),
        )
        if cur.rowcount == 0:
            raise AuditError(f"{self.path}: no run {run_id!r} to end; call start_run() first")

    def record(
        self, run_id: str, plugin_name: str, plugin_path: str | os.PathLike | None, phase: str, status: str,
        secrets: Sequence[str] = (), **fields: Any,
    ) -> int:
        """One phase outcome of one plugin; returns the row id. `fields` are ENHANCEMENT_FIELDS."""
        if phase not in PHASES:
            raise ValueError(f"audit phase {phase!r} is not one of {', '.join(PHASES)}")
        if status not in STATUSES:
            raise ValueError(f"audit status {status!r} is not one of {', '.join(STATUSES)}")
        unknown = sorted(set(fields) - set(ENHANCEMENT_FIELDS))
        if unknown:
            raise TypeError(f"unknown audit field(s) {', '.join(unknown)}; known: {', '.join(ENHANCEMENT_FIELDS)}")
        fields.setdefault("enhancement_type", "skill_md")
        row = {
            "timestamp": utc_now(), "run_id": run_id, "plugin_name": plugin_name,
            "plugin_path": None if plugin_path is None else str(plugin_path), "phase": phase, "status": status,
            **fields,
        }
        row = {k: self._clean(v, secrets) for k, v in row.items()}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cur = self.connection().execute(f"INSERT INTO enhancements ({cols}) VALUES ({marks})", tuple(row.values()))
        return cur.lastrowid

    def record_api_calls(
        self, run_id: str, plugin: str, phase: str, attempts: Sequence[dict[str, Any]], secrets: Sequence[str] = ()
    ) -> int:
        """Store each HTTP attempt (Usage.attempts) in one transaction; returns how many.

        Attempt keys read (as skillbuild/calls/path.py writes them): time (ISO or epoch), status (HTTP
        status; None when no response), latency_s, input_tokens, output_tokens, retried (default: every
        attempt but the last), error (text), audit_id (the row `begin_attempt` wrote before the send: updated,
        not inserted again).
        """
        written = [(a, i == len(attempts) - 1) for i, a in enumerate(attempts) if a.get("audit_id")]
        rows = [self._attempt_row(run_id, plugin, phase, a, i == len(attempts) - 1, secrets)
                for i, a in enumerate(attempts) if not a.get("audit_id")]
        for attempt, is_last in written:  # written before their send: only their final details change
            self.finish_attempt(attempt["audit_id"], attempt, is_last, secrets)
        if not rows:
            return len(written)
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO api_calls (run_id, plugin_name, phase, time, status, latency_seconds, input_tokens,"
                " output_tokens, retried, error, mode, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows) + len(written)

    def begin_attempt(self, run_id: str, plugin: str, phase: str, attempt: dict[str, Any]) -> int:
        """Write one HTTP attempt before it is sent (outcome `sent`); returns its row id. A run killed with the
        request in flight leaves it `sent`, and the next run marks it `unknown` (possibly billed)."""
        cur = self.connection().execute(
            "INSERT INTO api_calls (run_id, plugin_name, phase, time, retried, outcome) VALUES (?, ?, ?, ?, 0, ?)",
            (run_id, plugin, phase, _as_time(attempt.get("time")), OUTCOME_SENT))
        return cur.lastrowid

    def finish_attempt(self, row_id: int, attempt: dict[str, Any], is_last: bool = True,
                       secrets: Sequence[str] = ()) -> None:
        """Complete an attempt written by `begin_attempt` with its status, latency, tokens and error."""
        row = self._attempt_row("", "", "", attempt, is_last, secrets)[4:]
        answered = attempt.get("status") == 200
        self.connection().execute(
            "UPDATE api_calls SET status = ?, latency_seconds = ?, input_tokens = ?, output_tokens = ?, retried = ?,"
            " error = ?, mode = ?, cost_usd = ?, outcome = ? WHERE id = ?",
            (*row, OUTCOME_ANSWERED if answered else OUTCOME_FAILED, row_id))

    def close_dead_runs(self, current: str, alive: Callable[[str], bool]) -> list[tuple[str, int]]:
        """Close the runs left open by killed processes (all but `current` and those `alive(run_id)` says still
        run) as `killed`, their in-flight attempts marked `unknown`; returns (run id, unknown attempts) each."""
        conn = self.connection()
        open_ids = [r[0] for r in conn.execute("SELECT id FROM runs WHERE ended IS NULL AND status IS NULL"
                                               " AND id != ?", (current,))]
        closed = []
        for run_id in (r for r in open_ids if not alive(r)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                unknown = conn.execute("UPDATE api_calls SET outcome = ? WHERE run_id = ? AND outcome = ?",
                                       (OUTCOME_UNKNOWN, run_id, OUTCOME_SENT)).rowcount
                # `ended` stays empty: when a killed run stopped is not known, only that it did not finish
                conn.execute("UPDATE runs SET status = ? WHERE id = ? AND ended IS NULL", (RUN_KILLED, run_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            closed.append((run_id, unknown))
        return closed

    def _attempt_row(self, run_id, plugin, phase, attempt, is_last, secrets) -> tuple:
        status = attempt.get("status", attempt.get("http_status"))
        latency = next((attempt[k] for k in ("latency_s", "latency_seconds", "latency") if attempt.get(k) is not None),
                       None)
        retried = attempt.get("retried", not is_last)
        error = attempt.get("error")
        return (
            run_id, plugin, phase, _as_time(attempt.get("time")),
            int(status) if status is not None else None,
            float(latency) if latency is not None else None,
            attempt.get("input_tokens"), attempt.get("output_tokens"), int(bool(retried)),
            self._clean(str(error), secrets) if error else None, attempt.get("mode", "online"),
            attempt.get("cost_usd"),
        )

    # batch jobs (skillbuild/calls/batch.py) -------------------------------------------------------

    def batch_job_open(self, phase: str, request_hash: str, count: int, input_uri: str, output_uri: str,
                       display_name: str, run_id: str) -> int:
        """The intent row, written before the job is created: state `submitting`, no job name yet."""
        now = utc_now()
        cur = self.connection().execute(
            "INSERT INTO batch_jobs (phase, request_hash, request_count, input_uri, output_uri, display_name, state,"
            " run_id, created, updated) VALUES (?, ?, ?, ?, ?, ?, 'submitting', ?, ?, ?)",
            (phase, request_hash, count, input_uri, output_uri, display_name, run_id, now, now))
        return cur.lastrowid

    def batch_job_update(self, row_id: int, **fields: Any) -> None:
        """Set job_name, state, succeeded or failed of one batch_jobs row."""
        unknown = set(fields) - {"job_name", "state", "succeeded", "failed"}
        if unknown:
            raise TypeError(f"unknown batch_jobs field(s) {', '.join(sorted(unknown))}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.connection().execute(f"UPDATE batch_jobs SET {sets}, updated = ? WHERE id = ?",
                                  (*fields.values(), utc_now(), row_id))

    def run_spend(self, run_id: str, price_in: float, price_out: float) -> float:
        """USD one run's api_calls cost: batch rows at their recorded batch price, online rows at these prices."""
        row = self.query("SELECT COALESCE(SUM(CASE WHEN mode = 'batch' THEN cost_usd ELSE"
                         " (COALESCE(input_tokens, 0) * ? + COALESCE(output_tokens, 0) * ?) / 1e6 END), 0)"
                         " FROM api_calls WHERE run_id = ?", (price_in, price_out, run_id))[0]
        return float(row[0])

    def batch_jobs(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """batch_jobs rows, oldest first; only those in `states` when given."""
        rows = self.query("SELECT * FROM batch_jobs ORDER BY id")
        return [dict(r) for r in rows if states is None or r["state"] in states]

    # reads ----------------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def last_outcomes(self) -> dict[str, Outcome]:
        """Each plugin's most recent row."""
        rows = self.query(
            "SELECT plugin_name, run_id, phase, status, timestamp, error_class, error_message, output_bytes"
            " FROM enhancements WHERE id IN (SELECT MAX(id) FROM enhancements GROUP BY plugin_name)"
        )
        return {r["plugin_name"]: Outcome(**dict(r)) for r in rows}

    def last_backup(self) -> dict[str, Any] | None:
        """The newest `doit backup` row (status, error_class, backup_path, ...), or None."""
        rows = self.query("SELECT * FROM enhancements WHERE phase = 'backup' ORDER BY id DESC LIMIT 1")
        return dict(rows[0]) if rows else None

    def backup_anchors(self) -> dict[str, tuple[str, str]]:
        """Backup folder name -> (archive sha256, files digest) for every archive this machine made: what an
        off-site restore checks Turso's copy against. Rows from before full hashes were kept are left out."""
        rows = self.query("SELECT backup_path, output_hash, input_hash FROM enhancements WHERE phase = 'backup' "
                          "AND backup_path IS NOT NULL AND length(output_hash) = 64 AND input_hash IS NOT NULL")
        return {Path(r["backup_path"]).name: (r["output_hash"], r["input_hash"]) for r in rows}

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs, newest first; `arguments` and `counts` decoded."""
        sql = "SELECT * FROM runs ORDER BY started DESC, id DESC"
        rows = self.query(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        out = []
        for r in rows:
            d = dict(r)
            d["arguments"] = json.loads(d["arguments"] or "[]")
            d["counts"] = json.loads(d["counts"]) if d["counts"] else None
            out.append(d)
        return out

    def final_outcomes(self) -> list[sqlite3.Row]:
        """(run_id, plugin_name, phase, status, ...) of each plugin's final row per run (see README_QUERIES)."""
        return self.query(
            "SELECT * FROM enhancements WHERE id IN (SELECT MAX(id) FROM enhancements"
            " WHERE phase NOT IN ('restore', 'backup') AND NOT (phase = 'analyse' AND status = 'success')"
            " GROUP BY run_id, plugin_name) ORDER BY id"
        )

    def success_rate(self) -> tuple[int, int, float | None]:
        """(built, failed, percent) exactly as the README's success-rate query computes it."""
        row = self.query(README_QUERIES[0][1])[0]
        return (row["built"] or 0, row["failed"] or 0, row["success_pct"])

    def outcomes_per_run(self) -> list[tuple[str, dict[str, int]]]:
        """[(run_id, {status: plugins})] oldest run first."""
        per_run: dict[str, dict[str, int]] = {}
        for r in self.final_outcomes():
            counts = per_run.setdefault(r["run_id"] or "(seed)", {s: 0 for s in STATUSES})
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return sorted(per_run.items())

    def plugin_seconds(self) -> dict[str, float]:
        """Work time per plugin (analyse + generate + repair) in the latest run that did work on it."""
        rows = self.query(
            "SELECT plugin_name, run_id, SUM(processing_time_seconds) AS seconds FROM enhancements"
            " WHERE phase IN ('analyse', 'generate', 'repair') AND processing_time_seconds IS NOT NULL"
            " GROUP BY plugin_name, run_id ORDER BY run_id"
        )
        return {r["plugin_name"]: float(r["seconds"]) for r in rows}  # later runs overwrite earlier ones

    def skill_sizes(self) -> dict[str, int]:
        """SKILL.md bytes of each plugin's latest successful write."""
        rows = self.query(
            "SELECT plugin_name, output_bytes FROM enhancements WHERE id IN (SELECT MAX(id) FROM enhancements"
            " WHERE status = 'success' AND phase IN ('generate', 'repair') AND output_bytes IS NOT NULL"
            " GROUP BY plugin_name)"
        )
        return {r["plugin_name"]: int(r["output_bytes"]) for r in rows}

    def calls_per_day(self) -> list[dict[str, Any]]:
        """[{day, calls, errors, retried, input_tokens, output_tokens}] oldest day first (UTC days)."""
        rows = self.query(
            "SELECT date(time) AS day, COUNT(*) AS calls, SUM(error IS NOT NULL) AS errors, SUM(retried) AS retried,"
            " COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens"
            " FROM api_calls GROUP BY day ORDER BY day"
        )
        return [dict(r) for r in rows]

    def failures(self, run_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Failure rows, newest first; only `run_id`'s when given."""
        where, params = ("AND run_id = ?", (run_id,)) if run_id else ("", ())
        rows = self.query(
            "SELECT run_id, timestamp, plugin_name, phase, error_class, error_message FROM enhancements"
            f" WHERE status = 'failure' {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(r) for r in rows]

    # what `doit plan` and `doit quota` estimate from -------------------------------------------------

    def output_averages(self, provider: str, model: str) -> list[sqlite3.Row]:
        """(phase, n, tokens, bytes) per phase: successful calls of this provider and model that reported
        output tokens, with their mean output tokens and output bytes."""
        return self.query(
            "SELECT phase, COUNT(*) AS n, AVG(output_tokens) AS tokens, AVG(output_bytes) AS bytes"
            " FROM enhancements WHERE status = 'success' AND provider = ? AND model = ?"
            " AND phase IN ('analyse', 'generate', 'repair') AND output_tokens > 0 GROUP BY phase",
            (provider, model))

    def repair_counts(self, provider: str, model: str) -> tuple[int, int]:
        """(repairs, generations) among this provider's and model's generations that passed or met a gate."""
        row = self.query(
            "SELECT SUM(phase = 'repair') AS repairs, SUM(phase = 'generate') AS generations FROM enhancements"
            " WHERE provider = ? AND model = ? AND phase IN ('generate', 'repair')"
            " AND (status = 'success' OR error_class = 'gate')", (provider, model))[0]
        return row["repairs"] or 0, row["generations"] or 0

    def mean_latency(self) -> float | None:
        """Mean seconds of an answered (HTTP 200) attempt."""
        return self.query("SELECT AVG(latency_seconds) FROM api_calls WHERE status = 200")[0][0]

    def usage_since(self, since: str) -> tuple[int, int, int]:
        """(attempts, input tokens, output tokens) recorded at or after `since` (ISO UTC text)."""
        row = self.query("SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)"
                         " FROM api_calls WHERE time >= ?", (since,))[0]
        return row[0], row[1], row[2]

    # what the benches check after a run ---------------------------------------------------------------

    def succeeded_steps(self) -> set[tuple[str, str]]:
        """{(plugin, phase)} that succeeded at least once."""
        rows = self.query("SELECT DISTINCT plugin_name, phase FROM enhancements WHERE status = 'success'")
        return {(r[0], r[1]) for r in rows}

    def answered_steps(self) -> set[tuple[str, str]]:
        """{(plugin, phase)} whose answer is on record: a success, or an answer the gates or the schema refused."""
        rows = self.query("SELECT DISTINCT plugin_name, phase FROM enhancements WHERE status = 'success'"
                          " OR (status = 'failure' AND error_class IN ('gate', 'schema'))")
        return {(r[0], r[1]) for r in rows}

    def open_runs(self) -> int:
        """Runs started and never closed: killed before their end and not yet closed as `killed` by a later run."""
        return self.query("SELECT COUNT(*) FROM runs WHERE ended IS NULL AND status IS NULL")[0][0]

    def killed_runs(self) -> list[str]:
        """Ids of runs closed as killed by a later run (they never recorded their end), newest first."""
        return [r[0] for r in self.query("SELECT id FROM runs WHERE status = ? ORDER BY started DESC, id DESC",
                                         (RUN_KILLED,))]

    def unknown_calls_since(self, since: str) -> int:
        """API attempts at or after `since` whose run died with them in flight: possibly billed."""
        return self.query("SELECT COUNT(*) FROM api_calls WHERE time >= ? AND outcome IN (?, ?)",
                          (since, OUTCOME_SENT, OUTCOME_UNKNOWN))[0][0]

    def attempts_per_plugin(self) -> dict[str, int]:
        """HTTP attempts recorded per plugin, every run."""
        return {r[0]: r[1] for r in self.query("SELECT plugin_name, COUNT(*) FROM api_calls GROUP BY 1")}

    def last_build_run(self) -> str | None:
        """The README's notion of 'last run': the newest run id with a non-restore row."""
        rows = self.query(  # newest row, not MAX(run_id): two runs in one second sort by pid, not time
            "SELECT run_id AS r FROM enhancements WHERE phase NOT IN ('restore', 'backup') ORDER BY id DESC LIMIT 1"
        )
        return rows[0]["r"] if rows else None


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the DB to SCHEMA_VERSION in one transaction; returns the version found before."""
    conn.execute("BEGIN IMMEDIATE")  # re-read the version under the lock: another worker may have migrated
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {found} is newer than this skillbuild knows ({SCHEMA_VERSION}); update skillbuild"
            )
        for _title, steps in MIGRATIONS[found:]:
            for sql in steps:
                conn.execute(sql)
        if found != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            conn.execute("ROLLBACK")
        raise
    return found
