"""The quota governor: one throttle for every API call, shared by all workers and runs.

State lives in a small SQLite file (WAL) that every doit worker, process or thread, opens.
Each call goes through two short `BEGIN IMMEDIATE` transactions and never sleeps inside one:

1. reserve: compute the earliest allowed send time from the pacing rules, insert a row for it;
2. confirm: after sleeping until then, re-check against the calls actually sent (a 429 from
   another worker, or a late wake-up, may have moved the goal posts) and mark the row sent.

Two rules set the pace, on two clocks. The gap (one send every minute/rpm, or the preset's slower one)
chains planned slots: each call's slot is the previous slot plus its gap, so a thread that wakes a few
milliseconds late, or a request that takes a while to leave, delays its own send only, not every later
one (chaining the actual send times made each such delay permanent: bench/quota_sim.py --rpm 15 --repeat 3
measured 1.41x the quota minimum before, 1.17x after, with the same 50 ms window guard).
The per-minute window, which is what protects the quota, counts the actual send times: no window of a
minute plus `window_guard` ever holds more than rpm sends as they really left.

Every row counts against its quota day from the moment it is reserved, so many processes
racing can never push a day past its budget. Rows are never deleted once sent: they are the
record that `snapshot()`, `history()`, `recommend()` and `eta_seconds()` read.

Times are epoch seconds from an injectable clock. `Limits.time_scale` compresses time for
benchmarks: with 60, one simulated minute lasts one real second (every window, gap and rest is
divided by it, and each real quota day is tiled into 60 simulated days). A server's retry delay
is taken as given: a time-scaled server already reports it in real seconds.
"""
from __future__ import annotations

import math
import os
import random
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skillbuild.store import sqlite, writing

BUSY_TIMEOUT_S = 5.0  # transactions last milliseconds; this only absorbs bursts of workers
TURN_TIMEOUT_S = 5.0  # the same, for the threads of one process (see _turn)
MAX_STEPS = 10_000  # bound on re-planning loops; hitting it means a bug, not a busy quota



class StateDBError(RuntimeError):
    """The throttle's state DB cannot be opened or created; the message names the file and the fix."""

class QuotaExhausted(Exception):
    """Today's budget is spent; `resets_at` (aware, quota time zone) is when it refills."""

    def __init__(self, message: str, resets_at: datetime):
        super().__init__(message)
        self.resets_at = resets_at


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class Limits:
    """Configured limits; rpm/rpd/tpm are the raw quota, divided by `safety_factor` when used.

    Durations (`min_gap`, `jitter`, `rest_seconds`) are in simulated seconds, i.e. real seconds
    when `time_scale` is 1.
    """

    rpm: float = 15.0  # requests per minute
    rpd: int = 1500  # requests per quota day
    tpm: int | None = None  # tokens per minute (None: not limited)
    safety_factor: float = 1.0  # the configured quota is the limit; a 429 halves the rate (decrease)
    quota_tz: str = "America/Los_Angeles"  # the quota day starts at midnight here
    min_gap: float = 0.0  # seconds between sends, plus a random 0..jitter
    jitter: float = 0.0
    gap_from: str = "send"  # "send": gap between sends; "done": after the previous call ended
    rest_every: int = 0  # rest after every N plugins (0: never)
    rest_seconds: tuple[float, float] = (0.0, 0.0)  # rest length range
    time_scale: float = 1.0
    decrease: float = 0.5  # a 429 multiplies the allowed rate by this
    increase: float = 0.05  # each success adds this to the rate factor, up to 1
    min_rate_factor: float = 0.05
    # Real seconds added to the per-minute window: the server counts a call some milliseconds after its
    # send stamp (taken once its body is written), unevenly (it reads and parses the request first, on a
    # machine that may be busy), so a window of exactly one minute can hold one call too many by the
    # server's clock. Real seconds, not simulated: the unevenness is the machine's and the network's, whatever
    # the time scale. Against the fake server on 2 busy cores, 50 ms let 1 run in 6 through with one call
    # too many (bench/quota_sim.py, 15 rpm --scale 60: a 93 KB request counted 80 ms after its stamp).
    window_guard: float = 0.1

    def __post_init__(self) -> None:
        problems = _limit_problems(self)
        if problems:
            raise ValueError("invalid throttle limits: " + "; ".join(problems))

    @property
    def rpm_effective(self) -> float:
        return self.rpm / self.safety_factor

    @property
    def rpd_effective(self) -> int:
        return int(self.rpd // self.safety_factor)

    @property
    def tpm_effective(self) -> float | None:
        return None if self.tpm is None else self.tpm / self.safety_factor

    @property
    def minute(self) -> float:
        """Length of a minute in real seconds."""
        return 60.0 / self.time_scale

    @property
    def window(self) -> float:
        """Real seconds of the per-minute window the throttle keeps: a minute plus the guard."""
        return self.minute + self.window_guard

    def interval(self, rate_factor: float = 1.0) -> float:
        """Real seconds between sends that the per-minute limit allows at this rate factor."""
        return self.minute / (self.rpm_effective * rate_factor)

    def window_cap(self) -> int:
        return max(1, math.floor(self.rpm_effective))


def _limit_problems(lim: Limits) -> list[str]:
    """Each problem names the setting and how to fix it."""
    out = []
    if lim.rpm <= 0:
        out.append(f"rpm={lim.rpm} must be > 0 (set SKILLBUILD_RPM)")
    if lim.safety_factor < 1:
        out.append(f"safety_factor={lim.safety_factor} must be >= 1 (set SKILLBUILD_SAFETY_FACTOR)")
    elif lim.rpd < lim.safety_factor:
        out.append(
            f"rpd={lim.rpd} with safety_factor={lim.safety_factor} leaves no daily budget: "
            "raise SKILLBUILD_RPD or lower SKILLBUILD_SAFETY_FACTOR"
        )
    if lim.tpm is not None and lim.tpm <= 0:
        out.append(f"tpm={lim.tpm} must be > 0, or unset to disable the token limit")
    if lim.min_gap < 0 or lim.jitter < 0:
        out.append("min_gap and jitter must be >= 0 (set SKILLBUILD_MIN_GAP / SKILLBUILD_JITTER)")
    if lim.gap_from not in ("send", "done"):
        out.append(f"gap_from={lim.gap_from!r} must be 'send' or 'done'")
    if lim.rest_every < 0 or not 0 <= lim.rest_seconds[0] <= lim.rest_seconds[1]:
        out.append("rest_every must be >= 0 and rest_seconds a range 'LOW-HIGH' with 0 <= LOW <= HIGH")
    if lim.window_guard < 0:
        out.append(f"window_guard={lim.window_guard} must be >= 0")
    if lim.time_scale <= 0:
        out.append(f"time_scale={lim.time_scale} must be > 0")
    if not 0 < lim.decrease < 1 or lim.increase <= 0 or not 0 < lim.min_rate_factor <= 1:
        out.append("decrease must be in (0, 1), increase > 0, min_rate_factor in (0, 1]")
    try:
        ZoneInfo(lim.quota_tz)
    except (ZoneInfoNotFoundError, ValueError):
        out.append(f"quota_tz={lim.quota_tz!r} is not an IANA time zone (e.g. America/Los_Angeles)")
    return out


# The seed script's pacing: a sleep after every call (first 90-120 s, later 45-60 s), an extra 30-60 s
# rest every 10 plugins, and a third of the quota (safety factor 3). "default" paces by the configured quota
# alone: it is what the project allows, and the adaptive decrease on a 429 is the safety.
_SEED = {"safety_factor": 3.0, "gap_from": "done", "rest_every": 10, "rest_seconds": (30, 60)}
PRESETS: dict[str, Limits] = {
    "default": Limits(),
    "seed": Limits(min_gap=45, jitter=15, **_SEED),
    "seed-initial": Limits(min_gap=90, jitter=30, **_SEED),
}


# Settings that override a preset when not None, and their types.
SETTING_TYPES = {"rpm": float, "rpd": int, "tpm": int, "safety_factor": float, "min_gap": float,
                 "jitter": float, "rest_every": int, "quota_tz": str, "time_scale": float}


def limits_from_settings(settings: Any) -> Limits:
    """The preset named by `settings.pace_preset`, with every non-None setting laid over it."""
    name = getattr(settings, "pace_preset", None) or "default"
    if name not in PRESETS:
        raise ValueError(f"pace_preset={name!r} is unknown; use one of {', '.join(PRESETS)}")
    over: dict[str, Any] = {}
    for key, kind in SETTING_TYPES.items():
        value = getattr(settings, key, None)
        if value is None:
            continue
        try:
            over[key] = kind(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} must be a {kind.__name__} "
                             f"(set SKILLBUILD_{key.upper()} or [tool.skillbuild] {key})") from None
    rest = getattr(settings, "rest_seconds", None)
    if rest is not None:
        over["rest_seconds"] = parse_range(rest)
    return replace(PRESETS[name], **over)


def parse_range(value: Any) -> tuple[float, float]:
    """'30-60', '45', 45 or (30, 60) -> (low, high)."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return float(value[0]), float(value[1])
    try:
        parts = [float(p) for p in str(value).split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"rest_seconds={value!r} must look like '30-60' (seconds, low-high)")


def throttle_from_settings(settings: Any, clock: Clock | None = None) -> "Throttle":
    """The shared throttle at `settings.throttle_db`: the quota belongs to the Google project."""
    return Throttle(
        settings.throttle_db,
        limits_from_settings(settings),
        wait_for_reset=bool(getattr(settings, "wait_for_reset", False)),
        clock=clock,
    )


# ---------------------------------------------------------------- quota days


def day_bounds(t: float, lim: Limits) -> tuple[float, float]:
    """Start and end (epoch) of the quota day holding `t`: midnight to midnight in quota_tz.

    With time_scale != 1 each real quota day is cut into `time_scale` equal simulated days.
    """
    tz = ZoneInfo(lim.quota_tz)
    date = datetime.fromtimestamp(t, tz).date()
    start = datetime.combine(date, dtime(0), tz).timestamp()
    end = datetime.combine(date + timedelta(days=1), dtime(0), tz).timestamp()
    if lim.time_scale == 1:
        return start, end
    span = (end - start) / lim.time_scale
    k = math.floor((t - start) / span)
    return start + k * span, start + (k + 1) * span


def format_time(t: float, tz: str) -> str:
    """'2026-11-04 00:00:00 PST (2026-11-04 08:00:00 UTC)'."""
    fmt = "%Y-%m-%d %H:%M:%S %Z"
    local = datetime.fromtimestamp(t, ZoneInfo(tz)).strftime(fmt)
    return f"{local} ({datetime.fromtimestamp(t, timezone.utc).strftime(fmt)})"


def _exhausted(lim: Limits, used: int, start: float, end: float) -> QuotaExhausted:
    msg = (
        f"Today's API budget is spent: {used} of {lim.rpd_effective} calls "
        f"(rpd {lim.rpd} / safety factor {lim.safety_factor:g}) in the quota day that began "
        f"{format_time(start, lim.quota_tz)}. The quota resets at {format_time(end, lim.quota_tz)}; "
        "run again after that, or set wait_for_reset (SKILLBUILD_WAIT_FOR_RESET=1) to wait for it."
    )
    return QuotaExhausted(msg, datetime.fromtimestamp(end, ZoneInfo(lim.quota_tz)))


# ---------------------------------------------------------------- the store

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    rate_factor REAL NOT NULL DEFAULT 1.0,   -- AIMD multiplier on the allowed rate
    cut_at REAL NOT NULL DEFAULT 0,          -- last multiplicative decrease
    blocked_until REAL NOT NULL DEFAULT 0,   -- server retry delay: no send before this
    rest_until REAL NOT NULL DEFAULT 0,      -- rest every N plugins
    plugins_done INTEGER NOT NULL DEFAULT 0,
    last_done REAL NOT NULL DEFAULT 0        -- end of the latest call (gap_from = 'done')
);
INSERT OR IGNORE INTO state (id) VALUES (1);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,          -- reserved send time; the actual one once sent (the window counts these)
    slot REAL,                 -- planned send time: the gap chain counts these (NULL: a row of an older version)
    sent INTEGER NOT NULL DEFAULT 0,
    gap REAL NOT NULL,         -- real seconds this call keeps after the previous send
    est_tokens INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER,
    status INTEGER,            -- HTTP status; NULL with recorded_at set: no response
    retry_after REAL,
    recorded_at REAL,
    pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_at ON calls (at);
"""


def _connect(path: Path) -> sqlite3.Connection:
    # WAL with NORMAL: a commit is durable across a crash of the process, not of the machine, and
    # costs no fsync. Losing the last moments of call records to a power cut is harmless; an fsync per
    # transaction (three per call) is not, at the pace of a time-compressed benchmark.
    return sqlite.connect(path, busy_timeout=BUSY_TIMEOUT_S, synchronous="NORMAL")


# Each DB's connections, one per process and thread, kept open between transactions: opening one per
# transaction, and the WAL checkpoint its close runs, cost more than the transaction. An idle connection
# holds no lock in WAL mode.
_KEPT: dict[str, sqlite.PerProcess] = {}


def _kept(path: Path) -> sqlite3.Connection:
    """This thread's connection to `path` (a forked child opens its own)."""
    key = str(path)
    if key not in _KEPT:
        _KEPT[key] = sqlite.PerProcess(lambda: _connect(path))
    return _KEPT[key].get()


def _drop_kept(path: Path) -> None:
    if str(path) in _KEPT:
        _KEPT[str(path)].drop()


# Each DB's turn among the threads of this process (keyed by pid: a forked child makes its own). Threads that
# met at SQLite's write lock waited in its busy handler, which sleeps 1, 2, 5 ... 100 ms between tries while
# the holder, its lock taken, waits for the interpreter lock: with 46 threads at 60 rpm (time-compressed), half
# the threads' time went there and sends left up to 1.7 s after their slot. A thread lock wakes the next
# waiter as soon as it is released; SQLite's lock still orders the processes.
_TURNS: dict[tuple[int, str], threading.Lock] = {}
_TURNS_LOCK = threading.Lock()


def _turn(path: Path) -> threading.Lock:
    key = (os.getpid(), str(path))
    turn = _TURNS.get(key)
    if turn is None:
        with _TURNS_LOCK:
            turn = _TURNS.setdefault(key, threading.Lock())
    return turn


class _Tx:
    """`with _Tx(path) as conn:` one short BEGIN IMMEDIATE transaction on this thread's kept connection,
    one thread of the process at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = _kept(path)
        self.turn = _turn(path)

    def __enter__(self) -> sqlite3.Connection:
        if not self.turn.acquire(timeout=TURN_TIMEOUT_S):
            raise sqlite3.OperationalError(f"database is locked: another thread held {self.path} for "
                                           f"{TURN_TIMEOUT_S:g} s")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self.turn.release()
            if isinstance(exc, sqlite3.OperationalError):
                _drop_kept(self.path)  # e.g. the file was replaced: the next transaction reopens it
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        except BaseException:
            _drop_kept(self.path)
            raise
        finally:
            self.turn.release()


def _init_db(path: Path) -> None:
    conn = _connect(path)
    try:
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA)
        try:
            if "slot" not in {r[1] for r in conn.execute("PRAGMA table_info(calls)")}:  # a DB of an older version
                conn.execute("ALTER TABLE calls ADD COLUMN slot REAL")
                conn.execute("UPDATE calls SET slot = at")
            conn.execute("CREATE INDEX IF NOT EXISTS calls_slot ON calls (slot)")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


# ---------------------------------------------------------------- the throttle


class Throttle:
    """Blocks each API call until the shared limits allow it; see the module docstring."""

    def __init__(self, path: Path | str, limits: Limits | None = None, *, wait_for_reset: bool = False,
                 clock: Clock | None = None, rng: random.Random | None = None):
        self.path = Path(path)
        self.limits = limits or Limits()
        self.wait_for_reset = wait_for_reset
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self._local = threading.local()  # the call this thread is making (threads share objects)
        try:
            _init_db(self.path)
        except sqlite3.Error as exc:
            if writing.no_room(exc, self.path):
                raise StateDBError(f"cannot open the throttle state DB: {writing.write_failure(exc, self.path)}") \
                    from exc
            raise StateDBError(f"cannot open the throttle state DB {self.path}: {exc}; "
                               "check the folder is writable, or delete the file to start afresh") from exc

    # -- public interface

    def acquire(self, est_tokens: int = 0) -> None:
        """Block until one call may be sent; raise QuotaExhausted when today's budget is spent
        (or, with wait_for_reset, sleep until the quota day turns). Call once per HTTP attempt."""
        call_id, at = self._reserve(est_tokens)
        try:
            for _ in range(MAX_STEPS):
                self.clock.sleep(at - self.clock.now())
                at = self._confirm(call_id, est_tokens)
                if at is None:
                    self._local.call_id, call_id = call_id, None
                    return
                if at < 0:  # the day filled up while sleeping: plan again from scratch
                    call_id = None
                    call_id, at = self._reserve(est_tokens)
            raise RuntimeError("throttle could not settle on a send time; report this as a bug")
        finally:
            if call_id is not None:  # interrupted (Ctrl-C, error): free the unsent reservation
                self._cancel(call_id)

    def _cancel(self, call_id: int) -> None:
        with _Tx(self.path) as conn:
            conn.execute("DELETE FROM calls WHERE id=? AND NOT sent", (call_id,))

    def release_unsent(self) -> int:
        """Delete reservations never sent whose process is gone (a killed run's): they would count against the
        day's budget, and `doit quota` would show them waiting, for the rest of the day. Returns how many.
        A sent call stays whatever became of its process: it may have been billed."""
        from skillbuild.safety.journal import process_alive

        with _Tx(self.path) as conn:
            pids = [r[0] for r in conn.execute("SELECT DISTINCT pid FROM calls WHERE NOT sent")]
            dead = [pid for pid in pids if not process_alive(pid)]
            return sum(conn.execute("DELETE FROM calls WHERE NOT sent AND pid = ?", (pid,)).rowcount for pid in dead)

    def mark_sent(self) -> None:
        """The request of this thread's call is leaving now: stamp that time on it.

        Between `acquire` returning and the request leaving, the client builds the request; on a busy
        machine (or a worker's first call) that can take longer than the guard. Later decisions then count
        from when the call really left, which is what the server's window sees.
        """
        call_id = getattr(self._local, "call_id", None)
        if call_id is None:
            return
        with _Tx(self.path) as conn:
            conn.execute("UPDATE calls SET at=MAX(at, ?) WHERE id=?", (self.clock.now(), call_id))

    def record(self, status: int | None, retry_after: float | None = None, tokens: int = 0) -> None:
        """Outcome of the call last acquired by this thread: adapts the shared rate.

        `status` None means no HTTP response. `retry_after` is the server's retry delay in real
        seconds, as the server measures it (not scaled); no worker sends before it expires.
        """
        call_id = getattr(self._local, "call_id", None)
        self._local.call_id = None
        lim, now = self.limits, self.clock.now()
        with _Tx(self.path) as conn:
            st = conn.execute("SELECT * FROM state").fetchone()
            sent_at = now
            if call_id is not None:
                conn.execute("UPDATE calls SET status=?, tokens=?, retry_after=?, recorded_at=? WHERE id=?",
                             (status, tokens, retry_after, now, call_id))
                row = conn.execute("SELECT at FROM calls WHERE id=?", (call_id,)).fetchone()
                sent_at = row["at"] if row else now
            factor, cut_at = st["rate_factor"], st["cut_at"]
            if status == 429 and sent_at >= cut_at:  # one cut per burst of 429s sent at the old rate
                factor, cut_at = max(lim.min_rate_factor, factor * lim.decrease), now
            elif status is not None and 200 <= status < 300:
                factor = min(1.0, factor + lim.increase)
            blocked = st["blocked_until"]
            if retry_after:
                blocked = max(blocked, now + retry_after)
            conn.execute("UPDATE state SET rate_factor=?, cut_at=?, blocked_until=?, last_done=?",
                         (factor, cut_at, blocked, now))

    def plugin_done(self) -> None:
        """Count a finished plugin; every `rest_every` plugins, all workers rest a while."""
        lim = self.limits
        with _Tx(self.path) as conn:
            done = conn.execute("SELECT plugins_done FROM state").fetchone()[0] + 1
            conn.execute("UPDATE state SET plugins_done=?", (done,))
            if lim.rest_every and done % lim.rest_every == 0:
                rest = self.rng.uniform(*lim.rest_seconds) / lim.time_scale
                conn.execute("UPDATE state SET rest_until=MAX(rest_until, ?)", (self.clock.now() + rest,))

    def snapshot(self) -> dict[str, Any]:
        """Today's use and the current pace, for `doit quota` and `doit plan`."""
        lim, now = self.limits, self.clock.now()
        start, end = day_bounds(now, lim)
        conn = _connect(self.path)
        try:
            st = conn.execute("SELECT * FROM state").fetchone()
            day = conn.execute(
                "SELECT COUNT(*) AS reserved, SUM(sent) AS sent, SUM(COALESCE(tokens, est_tokens)) AS tokens,"
                " SUM(status = 429) AS n429, MAX(CASE WHEN sent THEN at END) AS last_sent"
                " FROM calls WHERE at >= ? AND at < ?", (start, end)).fetchone()
        finally:
            conn.close()
        factor = st["rate_factor"]
        return {
            "now": now,
            "calls_today": day["reserved"],  # sent plus reserved-and-waiting
            "sent_today": day["sent"] or 0,
            "tokens_today": day["tokens"] or 0,
            "http_429_today": day["n429"] or 0,
            "budget": lim.rpd_effective,
            "remaining": max(0, lim.rpd_effective - day["reserved"]),
            "rate_factor": factor,
            "effective_rpm": lim.rpm_effective * factor,
            "interval_s": max(lim.interval(factor), (lim.min_gap + lim.jitter / 2) / lim.time_scale),
            "blocked_until": st["blocked_until"] if st["blocked_until"] > now else None,
            "rest_until": st["rest_until"] if st["rest_until"] > now else None,
            "plugins_done": st["plugins_done"],
            "last_sent_at": day["last_sent"],
            "day_start": start,
            "resets_at": end,
            "day_start_text": format_time(start, lim.quota_tz),
            "resets_at_text": format_time(end, lim.quota_tz),
            "limits": asdict(lim),
        }

    def history(self, days: int = 7) -> list[dict[str, Any]]:
        """One dict per quota day with sent calls, oldest first, over the last `days` days."""
        lim, now = self.limits, self.clock.now()
        since = now - days * 86400 / lim.time_scale
        conn = _connect(self.path)
        try:
            rows = conn.execute("SELECT at, COALESCE(tokens, est_tokens) AS tokens, status FROM calls"
                                " WHERE sent AND at >= ? ORDER BY at", (since,)).fetchall()
        finally:
            conn.close()
        by_day: dict[float, list[sqlite3.Row]] = {}
        for row in rows:
            by_day.setdefault(day_bounds(row["at"], lim)[0], []).append(row)
        return [_day_summary(start, day_rows, lim) for start, day_rows in sorted(by_day.items())]

    # -- the two transactions

    def _reserve(self, est_tokens: int) -> tuple[int, float]:
        """Insert a reservation at the earliest allowed time; returns (row id, send time)."""
        with _Tx(self.path) as conn:
            st = conn.execute("SELECT * FROM state").fetchone()
            gap = self._gap(st["rate_factor"])
            now = self.clock.now()
            t, _ = self._plan(conn, st, now, gap, est_tokens, sent_only=False, exclude=None)
            cur = conn.execute("INSERT INTO calls (at, slot, gap, est_tokens, pid) VALUES (?, ?, ?, ?, ?)",
                               (t, t, gap, est_tokens, os.getpid()))
            return cur.lastrowid, t

    def _confirm(self, call_id: int, est_tokens: int) -> float | None:
        """Mark the call sent if still allowed now. Else return the new time to wait for,
        or -1 when its row was dropped because the day filled up."""
        with _Tx(self.path) as conn:
            st = conn.execute("SELECT * FROM state").fetchone()
            gap, slot = conn.execute("SELECT gap, slot FROM calls WHERE id=?", (call_id,)).fetchone()
            now = self.clock.now()
            try:
                t, chained = self._plan(conn, st, now, gap, est_tokens, sent_only=True, exclude=call_id,
                                        move_days=False)
            except _DayFull:
                conn.execute("DELETE FROM calls WHERE id=? AND NOT sent", (call_id,))
                return -1.0
            if t <= now:  # late or not, the slot stays the planned one: the next call's gap counts from it
                conn.execute("UPDATE calls SET at=?, slot=?, sent=1 WHERE id=?",
                             (now, max(slot if slot is not None else -math.inf, chained), call_id))
                return None
            conn.execute("UPDATE calls SET at=?, slot=? WHERE id=?", (t, t, call_id))
            return t

    def _gap(self, rate_factor: float) -> float:
        lim = self.limits
        wanted = (lim.min_gap + self.rng.uniform(0, lim.jitter)) / lim.time_scale
        return max(wanted, lim.interval(rate_factor))

    def _plan(self, conn, st, now: float, gap: float, est: int, *, sent_only: bool, exclude: int | None,
              move_days: bool = True) -> tuple[float, float]:
        """(earliest time >= now that keeps every limit, the slot the gap rules alone allow), counting reserved
        rows (or sent ones only). The gap rules chain slots; the window counts the rows' send times."""
        lim = self.limits
        t = now
        for _ in range(MAX_STEPS):
            chained = max(st["blocked_until"], st["rest_until"], _latest(conn, sent_only, exclude) + gap)
            if lim.gap_from == "done":
                chained = max(chained, st["last_done"] + gap)
            t = _window(conn, max(t, chained), est, lim, sent_only, exclude)
            start, end = day_bounds(t, lim)
            used = _count(conn, start, end, exclude)
            if used < lim.rpd_effective:
                return t, chained
            if not move_days:
                raise _DayFull
            if start <= now and not self.wait_for_reset:
                raise _exhausted(lim, used, start, end)
            t = end + 1e-6  # wait for the next quota day
        raise RuntimeError("throttle could not find a send time; report this as a bug")


class _DayFull(Exception):
    """Internal: a waiting reservation found its quota day full."""


def _where(sent_only: bool, exclude: int | None) -> tuple[str, tuple]:
    sql, args = "1", ()
    if sent_only:
        sql += " AND sent"
    if exclude is not None:
        sql, args = sql + " AND id != ?", (exclude,)
    return sql, args


def _latest(conn, sent_only: bool, exclude: int | None) -> float:
    """The latest slot: the gap rule counts from where the previous call was planned, not from how late it left."""
    where, args = _where(sent_only, exclude)
    value = conn.execute(f"SELECT MAX(slot) FROM calls WHERE {where}", args).fetchone()[0]
    return value if value is not None else -math.inf


def _window(conn, t: float, est: int, lim: Limits, sent_only: bool, exclude: int | None) -> float:
    """Move t later until the per-minute request and token windows have room for one more."""
    where, args = _where(sent_only, exclude)
    rows = conn.execute(f"SELECT at, COALESCE(tokens, est_tokens) FROM calls WHERE {where} AND at > ?"
                        " ORDER BY at", args + (t - lim.window,)).fetchall()
    count, tokens = len(rows), sum(r[1] for r in rows)
    cap, tpm = lim.window_cap(), lim.tpm_effective
    i = 0
    while i < len(rows) and (count - i + 1 > cap or (tpm is not None and tokens + est > tpm)):
        tokens -= rows[i][1]
        t = max(t, rows[i][0] + lim.window)  # rows[i] leaves the window at this time
        i += 1
    return t


def _count(conn, start: float, end: float, exclude: int | None) -> int:
    where, args = _where(False, exclude)
    return conn.execute(f"SELECT COUNT(*) FROM calls WHERE {where} AND at >= ? AND at < ?",
                        args + (start, end)).fetchone()[0]


def _day_summary(start: float, rows: list, lim: Limits) -> dict[str, Any]:
    ats = [r["at"] for r in rows]
    peak, j = 0, 0
    for i, at in enumerate(ats):  # the busiest per-minute window, by two pointers
        while ats[j] <= at - lim.minute:
            j += 1
        peak = max(peak, i - j + 1)
    return {
        "day_start": start,
        "day": datetime.fromtimestamp(start, ZoneInfo(lim.quota_tz)).strftime("%Y-%m-%d %H:%M:%S"),
        "calls": len(rows),
        "tokens": sum(r["tokens"] or 0 for r in rows),
        "http_429": sum(1 for r in rows if r["status"] == 429),
        "peak_per_minute": peak,
        "first": ats[0],
        "last": ats[-1],
    }


# ---------------------------------------------------------------- advice from recorded data


def recommend(history: list[dict[str, Any]], limits: Limits, last: int = 3) -> str:
    """One paragraph for `doit quota`: how close recent quota days came to the limits."""
    margin = limits.safety_factor
    gap = 60.0 / (limits.rpm / margin)
    keep = f"a gap of {gap:.0f} s between calls (rpm {limits.rpm:g} / {margin:g}) keeps a {margin:g}x margin"
    days = history[-last:]
    if not days:
        return f"No calls recorded yet; {keep} on the per-minute limit."
    peak_day = max(d["calls"] for d in days)
    peak_min = max(d["peak_per_minute"] for d in days)
    n429 = sum(d["http_429"] for d in days)
    parts = [
        f"Last {len(days)} quota day{'s' if len(days) > 1 else ''} peaked at "
        f"{100 * peak_day / limits.rpd:.0f} % of the daily limit ({peak_day} of {limits.rpd} calls) and "
        f"{100 * peak_min / limits.rpm:.0f} % of the per-minute limit ({peak_min} of {limits.rpm:g}).",
        f"{keep[0].upper()}{keep[1:]}.",
    ]
    if n429:
        parts.append(f"{n429} call{'s' if n429 > 1 else ''} got 429: the real quota is lower than configured; "
                     f"lower SKILLBUILD_RPM or raise SKILLBUILD_SAFETY_FACTOR above {margin:g}.")
    elif peak_day >= limits.rpd_effective:
        parts.append("The daily budget ran out: spread the work over more nights, or lower "
                     "SKILLBUILD_SAFETY_FACTOR if the quota page shows headroom.")
    elif limits.min_gap / limits.time_scale > limits.interval():
        parts.append(f"The minimum gap ({limits.min_gap:g} s) is slower than the quota needs; "
                     "SKILLBUILD_MIN_GAP=0 lets the per-minute limit set the pace.")
    return " ".join(parts)


def eta_seconds(calls_needed: int, limits: Limits, snapshot: dict[str, Any], plugins: int = 0) -> float:
    """Real seconds the throttle alone needs to let `calls_needed` calls through (API latency
    excluded), waiting for quota resets when today's budget is too small."""
    if calls_needed <= 0:
        return 0.0
    now = snapshot["now"]
    interval = max(limits.interval(snapshot["rate_factor"]),
                   (limits.min_gap + limits.jitter / 2) / limits.time_scale)
    first = max(now, snapshot["blocked_until"] or 0, snapshot["rest_until"] or 0,
                (snapshot["last_sent_at"] or -math.inf) + interval)
    rests = (plugins // limits.rest_every if limits.rest_every else 0) * sum(limits.rest_seconds) / 2
    eta = first - now + rests / limits.time_scale
    today = min(calls_needed, snapshot["remaining"])
    eta += max(0, today - 1) * interval
    left = calls_needed - today
    if left <= 0:
        return eta
    day_len = (snapshot["resets_at"] - snapshot["day_start"])
    per_day = limits.rpd_effective
    full_days, last_day = divmod(left, per_day)
    if last_day == 0:
        full_days, last_day = full_days - 1, per_day
    # the rest starts at the reset; each further day fills its budget, then waits for the next
    return max(eta, snapshot["resets_at"] - now) + full_days * day_len + (last_day - 1) * interval
