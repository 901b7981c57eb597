"""What killed runs leave outside the journal, released at the next run's start: unsent throttle reservations
and open `runs` rows (with their in-flight API attempts)."""
from __future__ import annotations

from skillbuild.safety.journal import process_alive


def release_reservations(settings) -> list[str]:
    """Free the throttle reservations that dead processes never sent (they would eat the day's budget)."""
    if not settings.throttle_db.is_file():
        return []  # never paced a call: nothing reserved
    from skillbuild import calls

    try:
        freed = calls.throttle_for(settings).release_unsent()
    except (ValueError, RuntimeError):
        return []  # a bad pacing setting: the run itself reports it, naming the setting
    return [f"released {freed} throttle reservation(s) a killed run never sent"] if freed else []


def run_alive(run_id: str) -> bool:
    """Whether the run's process still runs. Build runs are named `<UTC stamp>-<pid>`; any other name is
    taken as dead, since the caller holds the marketplace's run lock."""
    pid = run_id.rsplit("-", 1)[-1]
    return pid.isdigit() and process_alive(int(pid))


def close_dead_runs(audit, current: str) -> list[str]:
    """Close the runs killed before their end as `killed` (their in-flight calls: unknown outcome)."""
    lines = []
    for run_id, unknown in audit.close_dead_runs(current, run_alive):
        calls = f"; {unknown} API call(s) in flight, outcome unknown (counted as possibly billed)" if unknown else ""
        lines.append(f"closed run {run_id} as killed (it ended without recording its end){calls}")
    return lines
