"""The quota governor against a real SQLite state DB, in one process and across several."""
from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from skillbuild.calls.throttle import (
    PRESETS, Limits, QuotaExhausted, Throttle, day_bounds, eta_seconds, limits_from_settings,
    recommend, throttle_from_settings,
)
from skillbuild.config import load_settings

from vertex_server import fake_vertex_factory, make_provider, sample_plugin  # noqa: E402,F401

WORKER = Path(__file__).with_name("throttle_worker.py")
PACIFIC = ZoneInfo("America/Los_Angeles")
TOL = 1e-6  # float resolution of epoch seconds is ~2e-7


class FakeClock:
    """Time that only moves when someone sleeps or the test advances it."""

    def __init__(self, start: float):
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.slept.append(seconds)
            self.t += seconds


def pacific(*args) -> float:
    return datetime(*args, tzinfo=PACIFIC).timestamp()


def sent_rows(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM calls WHERE sent ORDER BY at").fetchall()
    finally:
        conn.close()


def make(tmp_path, clock, **limits) -> Throttle:
    return Throttle(tmp_path / "throttle.sqlite3", Limits(**limits), clock=clock, rng=random.Random(7))


def run_workers(db: Path, limits: Limits, n: int, calls: int, **extra) -> list[dict]:
    job = {"db": str(db), "limits": asdict(limits), "calls": calls, "start_at": time.time() + 1.0, **extra}
    procs = [subprocess.Popen([sys.executable, str(WORKER), json.dumps(job)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        lines += [json.loads(line) for line in out.splitlines()]
    return lines


# ---------------------------------------------------------------- across processes


def test_processes_racing_keep_gap_minute_window_and_daily_cap(tmp_path):
    # 1 simulated minute = 1 real s. Effective: 10 calls per minute (0.1 s apart), 30 per day.
    lim = Limits(rpm=20, rpd=60, safety_factor=2, min_gap=4, jitter=4, time_scale=60)
    db = tmp_path / "throttle.sqlite3"
    Throttle(db, lim)  # create the DB before the race, as the first doit task would
    lines = run_workers(db, lim, n=4, calls=10)

    rows = sent_rows(db)
    ats = [r["at"] for r in rows]
    oks = [line for line in lines if "ok" in line]
    assert len(oks) == len(rows)  # every granted call is on record, nothing else is
    # the daily cap holds in every quota day touched (one, unless the run crossed a tile edge)
    days: dict[float, int] = {}
    for at in ats:
        start = day_bounds(at, lim)[0]
        days[start] = days.get(start, 0) + 1
    assert all(count <= lim.rpd_effective for count in days.values())
    if len(days) == 1:  # 40 attempts for 30 calls: the budget was used fully, never exceeded
        assert len(oks) == lim.rpd_effective
    exhausted = [line for line in lines if "exhausted" in line]
    assert len(exhausted) >= 1 and "resets at" in exhausted[0]["exhausted"]
    # gap: each slot keeps its own jittered gap after the previous one, never below the rate interval, and
    # no call left before its slot
    slots = sorted(rows, key=lambda r: r["slot"])
    for prev, row in zip(slots, slots[1:]):
        assert row["slot"] - prev["slot"] >= row["gap"] - TOL
        assert row["gap"] >= lim.interval() - TOL and row["gap"] >= lim.min_gap / lim.time_scale - TOL
    assert all(row["at"] >= row["slot"] - TOL for row in rows)
    # per-minute window: no 1 s (simulated minute) window holds more than 10 sends
    for at in ats:
        assert sum(1 for other in ats if at - lim.minute < other <= at) <= lim.window_cap()
    # acquire never returned before the send time it recorded
    for pid in {line["pid"] for line in oks}:
        mine = sorted(r["at"] for r in rows if r["pid"] == pid)
        returned = sorted(line["ok"] for line in oks if line["pid"] == pid)
        assert all(r >= a for a, r in zip(mine, returned))


def test_retry_after_is_honoured_by_another_process_and_lock_is_free_while_it_waits(tmp_path):
    lim = Limits(rpm=60, rpd=1000, safety_factor=1, time_scale=10)  # 0.1 s apart; a minute is 6 s
    db = tmp_path / "throttle.sqlite3"
    main = Throttle(db, lim)
    main.acquire()
    main.record(429, retry_after=2.0)  # the server's delay, real seconds: binds every worker
    blocked = main.snapshot()["blocked_until"]
    assert blocked is not None and main.snapshot()["rate_factor"] == 0.5

    job = {"db": str(db), "limits": asdict(lim), "calls": 2, "start_at": 0}
    proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:  # until the worker holds a reservation and sleeps on it
            conn = sqlite3.connect(db)
            waiting = conn.execute("SELECT COUNT(*) FROM calls WHERE NOT sent").fetchone()[0]
            conn.close()
            if waiting:
                break
            time.sleep(0.02)
        assert waiting == 1 and time.time() < blocked
        started = time.time()
        main.record(None)  # a write transaction: would wait for the lock if the sleeper held it
        main.plugin_done()
        snap = main.snapshot()
        assert time.time() - started < 0.5
        assert snap["calls_today"] == 2 and snap["sent_today"] == 1  # the waiting reservation counts
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rows = sent_rows(db)
    assert len(rows) == 3
    assert rows[1]["at"] >= blocked  # no call before the server's retry delay expired
    # the rate cut reached the other process: its next call keeps the halved rate's spacing, as
    # recovered by its own one success (+0.05), not the full rate's
    assert rows[2]["slot"] - rows[1]["slot"] >= lim.interval(0.5 + lim.increase) - TOL > lim.interval()


def test_threads_sharing_one_throttle(tmp_path):
    lim = Limits(rpm=20, rpd=1000, safety_factor=1, time_scale=60)  # 0.05 s apart
    throttle = Throttle(tmp_path / "throttle.sqlite3", lim)
    outcomes: list[int] = []

    def work():
        for _ in range(5):
            throttle.acquire()
            throttle.record(200, tokens=10)
            outcomes.append(1)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    rows = sent_rows(tmp_path / "throttle.sqlite3")
    assert len(outcomes) == len(rows) == 15
    assert all(r["status"] == 200 and r["tokens"] == 10 for r in rows)  # each thread recorded its own call
    slots = sorted(r["slot"] for r in rows)
    assert all(b - a >= lim.interval() - TOL for a, b in zip(slots, slots[1:]))
    ats = [r["at"] for r in rows]
    assert all(sum(1 for other in ats if at - lim.minute < other <= at) <= lim.window_cap() for at in ats)


def test_threads_of_one_process_take_turns_instead_of_meeting_at_sqlites_lock(tmp_path, monkeypatch):
    # With no busy timeout, two transactions that meet at SQLite's write lock fail at once ("database is
    # locked"); in a build they wait in SQLite's busy handler instead, which sleeps up to 100 ms between tries
    # and made sends late. The threads of one process take turns on a lock of their own, so they never meet.
    from skillbuild.calls import throttle as module

    monkeypatch.setattr(module, "BUSY_TIMEOUT_S", 0.0)
    throttle = Throttle(tmp_path / "throttle.sqlite3", Limits(rpm=1e6, rpd=100_000, time_scale=1e3))
    errors: list[Exception] = []

    def work():
        try:
            for _ in range(25):
                throttle.acquire()
                throttle.mark_sent()
                throttle.record(200, tokens=1)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(sent_rows(tmp_path / "throttle.sqlite3")) == 8 * 25


# ---------------------------------------------------------------- quota days and persistence


def test_restart_knows_todays_count_and_rate(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 10, 0))
    first = make(tmp_path, clock, rpm=60, rpd=30, safety_factor=3)
    for tokens in (100, 200, 300):
        first.acquire(est_tokens=50)
        first.record(200, tokens=tokens)
    first.acquire()
    first.record(429)
    again = make(tmp_path, clock, rpm=60, rpd=30, safety_factor=3)
    snap = again.snapshot()
    assert (snap["calls_today"], snap["tokens_today"], snap["http_429_today"]) == (4, 600, 1)
    assert snap["remaining"] == 10 - 4
    assert snap["rate_factor"] == 0.5


def test_budget_exhaustion_names_the_reset_and_day_rollover_resets_the_count(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 23, 50))
    throttle = make(tmp_path, clock, rpm=60, rpd=9, safety_factor=3)
    for _ in range(3):
        throttle.acquire()
        throttle.record(200)
    with pytest.raises(QuotaExhausted) as err:
        throttle.acquire()
    assert err.value.resets_at == datetime(2026, 11, 4, 0, 0, tzinfo=PACIFIC)
    message = str(err.value)
    assert "3 of 3 calls" in message
    assert "2026-11-04 00:00:00 PST" in message and "2026-11-04 08:00:00 UTC" in message
    assert throttle.snapshot()["calls_today"] == 3  # a refused acquire reserves nothing

    clock.t = pacific(2026, 11, 3, 23, 59, 59)
    with pytest.raises(QuotaExhausted):
        throttle.acquire()
    clock.t = pacific(2026, 11, 4, 0, 0, 1)  # Pacific midnight has passed
    assert throttle.snapshot()["calls_today"] == 0
    throttle.acquire()
    snap = throttle.snapshot()
    assert snap["calls_today"] == 1 and snap["remaining"] == 2
    assert snap["day_start"] == pacific(2026, 11, 4, 0, 0)


def test_wait_for_reset_sleeps_until_the_quota_day_turns(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 20, 0))
    throttle = make(tmp_path, clock, rpm=60, rpd=2, safety_factor=1)
    for _ in range(2):
        throttle.acquire()
        throttle.record(200)
    waiting = Throttle(throttle.path, throttle.limits, clock=clock, wait_for_reset=True)
    waiting.acquire()
    reset = pacific(2026, 11, 4, 0, 0)
    assert reset <= clock.now() < reset + 1
    assert sum(clock.slept) >= reset - pacific(2026, 11, 3, 20, 0) - 1
    assert waiting.snapshot()["calls_today"] == 1


def test_scaled_quota_days_tile_the_real_day():
    lim = Limits(time_scale=60)
    midnight = pacific(2026, 11, 3, 0, 0)
    assert day_bounds(midnight + 10, lim) == (midnight, midnight + 1440)
    assert day_bounds(midnight + 1440 * 5 + 3, lim) == (midnight + 7200, midnight + 8640)
    assert day_bounds(midnight + 10, Limits()) == (midnight, pacific(2026, 11, 4, 0, 0))


# ---------------------------------------------------------------- pacing and AIMD


def test_aimd_cuts_once_per_burst_honours_retry_after_and_recovers_slowly(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    throttle = make(tmp_path, clock, rpm=30, rpd=10_000, safety_factor=1)  # 2 s apart
    other = make(tmp_path, clock, rpm=30, rpd=10_000, safety_factor=1)  # a second worker
    other.acquire()
    throttle.acquire()
    throttle.record(429, retry_after=30)
    cut_at = clock.now()
    assert throttle.snapshot()["rate_factor"] == 0.5
    # the other worker's 429 answers a call sent before the cut: one burst, one cut
    other.record(429)
    assert throttle.snapshot()["rate_factor"] == 0.5

    throttle.acquire()
    assert clock.now() >= cut_at + 30  # retry_after kept
    throttle.record(200)
    throttle.acquire()
    rows = sent_rows(throttle.path)
    # the halved rate, plus one success: 2 s / 0.55 apart instead of 2 s
    assert rows[-1]["at"] - rows[-2]["at"] == pytest.approx(2 / 0.55)
    throttle.record(200)
    factors = []
    for _ in range(12):
        throttle.acquire()
        throttle.record(200)
        factors.append(throttle.snapshot()["rate_factor"])
    assert factors[0] == pytest.approx(0.65)  # additive: +0.05 per success
    assert factors == sorted(factors) and factors[-1] == 1.0


class LateClock(FakeClock):
    """Wakes up `late` seconds late from every sleep, as a loaded machine does."""

    def __init__(self, start: float, late: float = 0.7):
        super().__init__(start)
        self.late = late

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + self.late if seconds > 0 else 0)


def test_a_late_wake_records_the_real_send_time_and_the_next_call_keeps_its_gap(tmp_path):
    clock = LateClock(pacific(2026, 11, 3, 9, 0))
    first = make(tmp_path, clock, rpm=60, rpd=100, safety_factor=1)  # 1 s apart
    second = make(tmp_path, clock, rpm=60, rpd=100, safety_factor=1)
    first.acquire()
    start = clock.now()
    # another worker reserves the slot 1 s after the first send, then oversleeps it (driven by
    # hand here: the private steps of acquire, to interleave the two workers deterministically)
    call_id, slot = second._reserve(0)
    assert slot == pytest.approx(start + 1)
    first.acquire()  # planned 2 s after the first send; wakes 0.7 s late
    rows = sent_rows(first.path)
    assert rows[-1]["at"] == clock.now()  # the time it really went out, not the planned one
    assert rows[-1]["at"] - rows[0]["at"] == pytest.approx(2.7)
    assert rows[-1]["slot"] == pytest.approx(start + 2)  # the planned one stays its slot
    # the late worker's slot has passed, but the send just made was planned for 2 s: 1 s gap after that
    assert second._confirm(call_id, 0) == pytest.approx(start + 3)


def test_late_sends_do_not_delay_the_calls_after_them(tmp_path):
    # each wake-up is 0.1 s late (a loaded machine); the gap chains the planned slots, so the lateness is
    # not added up call after call: one send a second, each 0.1 s after its slot
    clock = LateClock(pacific(2026, 11, 3, 9, 0), late=0.1)
    throttle = make(tmp_path, clock, rpm=60, rpd=100, safety_factor=1)  # 1 s apart
    start = clock.now()
    for _ in range(6):
        throttle.acquire()
        throttle.record(200)
    rows = sent_rows(tmp_path / "throttle.sqlite3")
    assert [r["at"] - start for r in rows] == pytest.approx([0, 1.1, 2.1, 3.1, 4.1, 5.1])
    assert [r["slot"] - start for r in rows] == pytest.approx([0, 1, 2, 3, 4, 5])


def test_the_minute_window_counts_the_real_send_times(tmp_path):
    # 3 calls per minute at 20x: 1 s apart, window 3 s + 0.25 s guard; every wake-up 0.1 s late. The 4th
    # call waits for the 1st to leave the window, the 5th for the 2nd's real send (1.1), not its slot (1.0)
    clock = LateClock(pacific(2026, 11, 3, 9, 0), late=0.1)
    throttle = make(tmp_path, clock, rpm=3, rpd=100, safety_factor=1, window_guard=0.25, time_scale=20)
    start = clock.now()
    for _ in range(5):
        throttle.acquire()
        throttle.record(200)
    rows = sent_rows(tmp_path / "throttle.sqlite3")
    assert [r["at"] - start for r in rows] == pytest.approx([0, 1.1, 2.1, 3.35, 4.45])


def test_the_send_stamp_moves_to_when_the_request_left(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    throttle = make(tmp_path, clock, rpm=60, rpd=100, safety_factor=1, window_guard=0)  # 1 s apart
    throttle.acquire()
    allowed = clock.now()
    clock.t += 0.4  # the client took this long to build and send the request
    throttle.mark_sent()
    throttle.record(200)
    throttle.mark_sent()  # no call in flight: nothing to stamp
    throttle.acquire()
    rows = sent_rows(tmp_path / "throttle.sqlite3")
    assert [row["at"] for row in rows] == pytest.approx([allowed + 0.4, allowed + 1])  # the window counts
    # the real send; the gap counts from the slot, so the slow start of one request delays no other
    assert [row["slot"] for row in rows] == pytest.approx([allowed, allowed + 1])


class RecordingThrottle:
    """The throttle interface, noting the order of events and what the server had seen at each."""

    def __init__(self, server):
        self.server, self.events = server, []

    def _note(self, what: str) -> None:
        self.events.append((what, self.server.stats()["requests_total"]))

    def acquire(self, est_tokens: int = 0) -> None:
        self._note("acquire")

    def mark_sent(self) -> None:
        self._note("sent")

    def record(self, status, retry_after=None, tokens: int = 0) -> None:
        self._note(f"record {status}")


def test_the_vertex_provider_stamps_each_request_as_it_leaves(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["503:first=1"])
    throttle = RecordingThrottle(server)
    make_provider(server, tmp_path, throttle=throttle, backoff_initial=0.01).analyse(sample_plugin(), "Analyse.")
    # stamped once the request is written: between the throttle letting it go and the answer, as the server
    # reads it (the server may or may not have counted it yet)
    assert [what for what, _ in throttle.events] == ["acquire", "sent", "record 503", "acquire", "sent", "record 200"]
    seen = [count for _, count in throttle.events]
    assert seen[0] == 0 and seen[1] in (0, 1) and seen[2] == 1
    assert seen[3] == 1 and seen[4] in (1, 2) and seen[5] == 2


def test_a_request_that_never_reached_the_wire_is_not_stamped(tmp_path):
    # nothing listens on the port: the connection is refused before any byte of the request is written, so
    # the throttle keeps the time it let the call go (the stamp is taken once the body is written, not when
    # the client starts on the request: a connection to open, or a busy interpreter, can hold it a while)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: connection refused
    throttle = RecordingThrottle(SimpleNamespace(stats=lambda: {"requests_total": 0}))
    caller = make_provider(f"http://127.0.0.1:{port}", tmp_path, throttle=throttle, max_attempts=1)
    with pytest.raises(Exception):
        caller.analyse(sample_plugin(), "Analyse.")
    assert [what for what, _ in throttle.events] == ["acquire", "record None"]


def test_tokens_per_minute_window(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    throttle = make(tmp_path, clock, rpm=600, rpd=10_000, tpm=1000, safety_factor=1)
    start = clock.now()
    throttle.acquire(est_tokens=600)
    throttle.record(200, tokens=700)  # the real count replaces the estimate
    throttle.acquire(est_tokens=400)
    guard = throttle.limits.window_guard
    assert clock.now() == start + 60 + guard  # 700 + 400 > 1000 until the first call leaves the window
    throttle.record(200, tokens=400)
    throttle.acquire(est_tokens=100)
    assert clock.now() == pytest.approx(start + 60.1 + guard)  # 400 + 100 fits after the 0.1 s interval


def test_the_minute_window_keeps_a_guard_for_uneven_delivery(tmp_path):
    # 3 calls per minute, no spacing rule in the way: the 4th waits a minute plus the guard, so a call
    # that reaches the server a little earlier than the first did still finds the server's window free.
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    throttle = make(tmp_path, clock, rpm=3, rpd=100, safety_factor=1, window_guard=0.25, time_scale=20)
    start = clock.now()
    for _ in range(3):
        throttle.acquire()
        throttle.record(200)
    throttle.acquire()
    sent = [row["at"] - start for row in sent_rows(tmp_path / "throttle.sqlite3")]
    assert sent == pytest.approx([0, 1, 2, 3.25])  # interval 60/3/20 = 1 s; window 3 s + 0.25 s
    with pytest.raises(ValueError, match="window_guard"):
        Limits(window_guard=-1)



def test_seed_preset_gap_after_each_call_and_rest_every_ten_plugins(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    throttle = Throttle(tmp_path / "t.sqlite3", PRESETS["seed"], clock=clock, rng=random.Random(3))
    throttle.acquire()
    clock.t += 20  # the call's latency
    throttle.record(200)
    done = clock.now()
    throttle.acquire()
    assert 45 <= clock.now() - done <= 60  # the seed slept 45-60 s after each call
    throttle.record(200)
    for _ in range(10):
        throttle.plugin_done()
    rest_until = throttle.snapshot()["rest_until"]
    assert rest_until is not None and 30 <= rest_until - clock.now() <= 60
    throttle.acquire()
    assert clock.now() >= rest_until
    assert PRESETS["seed-initial"].min_gap == 90 and PRESETS["seed-initial"].jitter == 30


# ---------------------------------------------------------------- configuration and advice


def test_limits_from_settings_overlays_the_preset():
    settings = SimpleNamespace(pace_preset="seed", rpm="10", rpd=None, tpm=None, safety_factor=1.5,
                               min_gap=None, jitter=None, rest_every=None, rest_seconds="5-8",
                               quota_tz=None, time_scale=None, wait_for_reset=True)
    lim = limits_from_settings(settings)
    assert (lim.rpm, lim.rpd, lim.safety_factor, lim.min_gap, lim.rest_every) == (10.0, 1500, 1.5, 45, 10)
    assert lim.rest_seconds == (5.0, 8.0) and lim.gap_from == "done"
    with pytest.raises(ValueError, match="pace_preset='fast' is unknown"):
        limits_from_settings(SimpleNamespace(pace_preset="fast"))
    with pytest.raises(ValueError, match="SKILLBUILD_RPD"):
        limits_from_settings(SimpleNamespace(pace_preset=None, rpd=2, safety_factor=3))  # budget below one call
    with pytest.raises(ValueError, match="must be a int"):
        limits_from_settings(SimpleNamespace(pace_preset=None, rpd="many"))
    with pytest.raises(ValueError, match="IANA"):
        Limits(quota_tz="Pacific/Nowhere")


def test_throttle_from_settings_shares_one_db_under_build_root(tmp_path):
    settings = load_settings(cli={"wait_for_reset": "1"}, env={}, pyproject=tmp_path / "n.toml",
                             project_root=tmp_path)
    throttle = throttle_from_settings(settings)
    assert throttle.path == tmp_path / "build" / "throttle.sqlite3" and throttle.path.exists()
    assert throttle.wait_for_reset and throttle.limits == PRESETS["default"]


def test_history_and_recommendation_from_recorded_calls(tmp_path):
    clock = FakeClock(pacific(2026, 11, 2, 9, 0))
    throttle = make(tmp_path, clock, rpm=60, rpd=100, safety_factor=1)
    for day, calls in ((2, 10), (3, 22)):
        clock.t = pacific(2026, 11, day, 9, 0)
        for _ in range(calls):
            throttle.acquire()
            throttle.record(200, tokens=5)
    history = throttle.history()
    assert [d["calls"] for d in history] == [10, 22]
    assert history[1]["tokens"] == 110 and history[1]["peak_per_minute"] == 22
    text = recommend(history, Limits(rpm=60, rpd=100, safety_factor=3))
    assert "peaked at 22 % of the daily limit" in text
    assert "a gap of 3 s" in text.lower() and "3x margin" in text
    assert "429" not in text
    throttle.acquire()
    throttle.record(429)
    assert "1 call got 429" in recommend(throttle.history(), throttle.limits)
    assert "No calls recorded yet" in recommend([], Limits())


def test_eta_counts_the_pace_and_waits_for_resets(tmp_path):
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    throttle = make(tmp_path, clock, rpm=15, rpd=30, safety_factor=3)  # 12 s apart, 10 a day
    throttle.acquire()
    throttle.record(200)
    snap = throttle.snapshot()
    limits = throttle.limits
    assert eta_seconds(0, limits, snap) == 0
    assert eta_seconds(5, limits, snap) == pytest.approx(12 * 5)  # next slot is 12 s after the last send
    reset_wait = snap["resets_at"] - snap["now"]
    # 9 fit today; the 10th starts the next quota day
    assert eta_seconds(10, limits, snap) == pytest.approx(reset_wait)
    assert eta_seconds(21, limits, snap) == pytest.approx(reset_wait + 86400 + 12)


def test_a_state_db_of_the_older_version_gets_slots_from_its_send_times(tmp_path):
    # the calls table before slots existed, with one call sent 0.5 s ago: the new version's gap counts from it
    clock = FakeClock(pacific(2026, 11, 3, 9, 0))
    db = tmp_path / "throttle.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), rate_factor REAL NOT NULL DEFAULT 1.0,"
        " cut_at REAL NOT NULL DEFAULT 0, blocked_until REAL NOT NULL DEFAULT 0, rest_until REAL NOT NULL DEFAULT 0,"
        " plugins_done INTEGER NOT NULL DEFAULT 0, last_done REAL NOT NULL DEFAULT 0);"
        "INSERT INTO state (id) VALUES (1);"
        "CREATE TABLE calls (id INTEGER PRIMARY KEY, at REAL NOT NULL, sent INTEGER NOT NULL DEFAULT 0,"
        " gap REAL NOT NULL, est_tokens INTEGER NOT NULL DEFAULT 0, tokens INTEGER, status INTEGER,"
        " retry_after REAL, recorded_at REAL, pid INTEGER NOT NULL);"
        f"INSERT INTO calls (at, sent, gap, status, pid) VALUES ({clock.now() - 0.5}, 1, 1.0, 200, 1);")
    conn.close()
    throttle = make(tmp_path, clock, rpm=60, rpd=100, safety_factor=1)  # 1 s apart
    throttle.acquire()
    rows = sent_rows(db)
    assert rows[0]["slot"] == rows[0]["at"]
    assert rows[1]["at"] == pytest.approx(rows[0]["at"] + 1)
    assert throttle.snapshot()["sent_today"] == 2
