"""Kills around the build for the chaos check: backup, restore, an off-site upload whose sqld dies, a full cache.

Run by `skillbuild.testing.chaos.chaos()` after the build's kills, on the same sandbox and fake server:

- backup: one uninterrupted `doit -a backup` (timed, to Turso on a real sqld), then SIGKILLs of the process
  group at random moments of its length, then one run to the end and `doit backups verify=1`;
- off-site: a new file makes the archive new; sqld is SIGKILLed while `doit backup` uploads, restarted on the same
  data, and the next `doit backup` must resume (chunks already there are not sent again) and verify;
- restore: `doit restore plugin=K` SIGKILLed at random moments; after each kill the next restore runs to the end,
  and the plugin's folder must be one of its two whole states (as built, or as the backup holds it);
- a response cache on a 200 KiB tmpfs (root only: `mount -t tmpfs`): a synthetic build against its own fake
  server; every request the server answered must be an `api_calls` row, the exit status must not be 3 and must
  equal `runs.exit_status`; after the tmpfs grows, the rerun's requests for prompts already answered are counted.

Then `final()` runs the build once more (it reaps what killed runs left) and counts leftovers: `.partial-*`,
`.skillbuild-*` and `*.restore-*` paths, journal entries, runs without an end; and billed calls the audit DB lacks
(the server's requests against `api_calls` rows).
"""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillbuild.config import PROJECT_ROOT as ROOT

LEFTOVER_MARKS = (".partial-", ".skillbuild-", ".restore-")
TMPFS_SIZE = "200k"


@dataclass
class OpsReport:
    backup_kills: int = 0
    backup_seconds: float = 0.0
    backup_exit: int | None = None
    verify_exit: int | None = None
    sqld_killed_exit: int | None = None  # the backup whose sqld died mid-upload
    resume_exit: int | None = None
    resume_line: str = ""
    resume_verify_exit: int | None = None
    restore_kills: int = 0
    restore_plugin: str = ""
    restore_changed_by_kill: int = 0  # kills after which the folder was no longer what it was before the run
    half_restored_after_kill: int = 0  # before the next run: what the journal must finish or roll back
    half_restored_after_rerun: list[str] = field(default_factory=list)
    restore_exits: list[int] = field(default_factory=list)
    tmpfs: dict = field(default_factory=dict)
    billed: int = 0
    api_calls_rows: int = 0
    leftovers: list[str] = field(default_factory=list)
    journal_entries: int = 0
    open_runs: int = 0
    notes: list[str] = field(default_factory=list)
    ledger: Any = None  # chaos.Ledger over every request, the operations' reruns included (set by chaos())

    @property
    def billed_missing(self) -> int:
        return max(0, self.billed - self.api_calls_rows)

    def problems(self) -> list[str]:
        bad_exit = lambda code: code not in (0, None)  # noqa: E731 - None: that part did not run
        checks = [(bad_exit(self.backup_exit), f"backup exit {self.backup_exit}"),
                  (bad_exit(self.verify_exit), f"backups verify=1 exit {self.verify_exit}"),
                  (bad_exit(self.resume_exit), f"resumed upload exit {self.resume_exit}"),
                  (bad_exit(self.resume_verify_exit), f"verify after resume exit {self.resume_verify_exit}"),
                  (self.billed_missing > 0, f"{self.billed_missing} billed call(s) missing from api_calls"),
                  (self.journal_entries > 0, f"{self.journal_entries} journal entries"),
                  (self.open_runs > 0, f"{self.open_runs} open run(s)")]
        t = self.tmpfs
        if t.get("ran"):
            checks += [(t["billed"] > t["api_calls"], f"tmpfs: {t['billed'] - t['api_calls']} billed call(s) missing"),
                       (t["exit"] == 3 or t["exit"] != t["exit_status"],
                        f"tmpfs: exit {t['exit']}, runs.exit_status {t['exit_status']}"),
                       (t["tracebacks"] > 0, f"tmpfs: {t['tracebacks']} traceback(s)")]
        out = [text for failed, text in checks if failed]
        out += [f"half-restored after the next run: {p}" for p in self.half_restored_after_rerun]
        out += [f"restore exit {e}" for e in self.restore_exits if e != 0]
        out += [f"leftover {p}" for p in self.leftovers]
        if self.ledger is not None:
            out += [f"row lost: {r}" for r in self.ledger.rows_lost]
            out += [f"paid twice: {p}" for p in self.ledger.paid_twice]
        return out


# ----------------------------------------------------------------------------- processes


def _doit(box, *args: str) -> list[str]:
    return [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args, "provider=vertex"]


def _run(box, args: list[str], log: Path, env: dict | None = None,
         timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(_doit(box, *args), env={**box.env(), **(env or {})}, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    with open(log, "a") as out:
        out.write(f"\n=== doit {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}")
    return proc


def _killed_run(box, args: list[str], delay: float, log: Path, env: dict | None = None) -> bool:
    """Start doit, SIGKILL its process group after `delay` s; False when it finished first."""
    from skillbuild.testing.chaos import kill_group

    with open(log, "a") as out:
        out.write(f"\n=== doit {' '.join(args)}: SIGKILL after {delay:.2f} s\n")
        out.flush()
        proc = subprocess.Popen(_doit(box, *args), env={**box.env(), **(env or {})}, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return True


# ----------------------------------------------------------------------------- backup and off-site


def turso_env(sqld) -> dict[str, str]:
    return {"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token, "SKILLBUILD_BACKUP_CHUNK_SIZE": "16384"}


def backup_kills(box, sqld, kills: int, rng: random.Random, log: Path, out: OpsReport) -> None:
    env = turso_env(sqld)
    started = time.monotonic()
    first = _run(box, ["-n", "1", "-a", "backup"], log, env)
    out.backup_seconds = time.monotonic() - started
    while out.backup_kills < kills:
        if _killed_run(box, ["-n", "1", "-a", "backup"], rng.uniform(0.3, out.backup_seconds + 0.5), log, env):
            out.backup_kills += 1
    out.backup_exit = _run(box, ["-n", "1", "-a", "backup"], log, env).returncode or first.returncode
    out.verify_exit = _run(box, ["backups", "verify=1"], log, env).returncode


def sqld_dies_mid_upload(box, settings, sqld, rng: random.Random, log: Path, out: OpsReport) -> None:
    """A new incompressible file (not a build input: binary) makes a new archive of many chunks; sqld is killed
    while they are sent. An upload that finished before the kill is tried again with a new file and a shorter
    wait (three tries)."""
    from skillbuild.testing.chaos import targets

    plugin_dir = sorted(p.path for p in targets(settings).values())[0]
    (plugin_dir / "assets").mkdir(exist_ok=True)
    env = turso_env(sqld)
    wait = 0.3
    for _ in range(3):
        (plugin_dir / "assets" / "chaos-blob.bin").write_bytes(rng.randbytes(8 << 20))
        out.sqld_killed_exit = _upload_with_sqld_killed(box, sqld, env, rng.uniform(0.0, wait), log)
        sqld.start()  # the same data: the chunks committed before the kill are there
        if out.sqld_killed_exit != 0:
            break
        wait /= 3
    again = _run(box, ["-n", "1", "-a", "backup"], log, env)
    out.resume_exit = again.returncode
    out.resume_line = next((ln.strip() for ln in again.stdout.splitlines() if "already there" in ln), "")
    out.resume_verify_exit = _run(box, ["backups", "verify=1"], log, env).returncode


def _upload_with_sqld_killed(box, sqld, env: dict, delay: float, log: Path) -> int:
    """`doit backup`, sqld SIGKILLed `delay` s after the local archive is printed (the upload starts then)."""
    with open(log, "a") as text:
        text.write(f"\n=== doit -a backup, sqld SIGKILLed {delay:.3f} s into the upload\n")
        text.flush()
        proc = subprocess.Popen(_doit(box, "-n", "1", "-a", "backup"), env={**box.env(), **env}, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "archive" in line.lower() or "bytes" in line:
                break
        time.sleep(delay)
        sqld.kill()
        rest, _ = proc.communicate(timeout=600)
        text.write("".join(seen) + rest)
    return proc.returncode


# ----------------------------------------------------------------------------- restore


def _folder_state(folder: Path) -> str:
    from skillbuild.testing.chaos import tree

    return str(sorted(tree(folder).items()))


def restore_kills(box, settings, kills: int, rng: random.Random, log: Path, out: OpsReport) -> None:
    from skillbuild.testing.chaos import targets

    folder = settings.backups_dir  # <run id>/<plugin>/
    backed = {p.name for p in folder.glob("*/*") if p.is_dir()} if folder.is_dir() else set()
    plugin = next((p for p in targets(settings).values() if p.key in backed), None)
    if plugin is None:
        out.notes.append("restore: no plugin has a backup; no restore kills")
        return
    out.restore_plugin = plugin.key
    args = ["restore", f"plugin={plugin.key}"]
    built = _folder_state(plugin.path)
    started = time.monotonic()
    out.restore_exits.append(_run(box, args, log).returncode)
    seconds = time.monotonic() - started
    whole = {built, _folder_state(plugin.path)}  # as built, and as the backup holds it
    while out.restore_kills < kills:
        before = _folder_state(plugin.path)
        if not _killed_run(box, args, rng.uniform(0.5 * seconds, 1.2 * seconds), log):
            continue
        out.restore_kills += 1
        now = _folder_state(plugin.path)
        out.restore_changed_by_kill += int(now != before)
        out.half_restored_after_kill += int(now not in whole)
        out.restore_exits.append(_run(box, args, log).returncode)  # the next run finishes or rolls back first
        if _folder_state(plugin.path) not in whole:
            out.half_restored_after_rerun.append(f"after kill {out.restore_kills}")


# ----------------------------------------------------------------------------- a full cache disk


def tmpfs_cache(work: Path, plugins: int, latency: str, seed: int, log: Path, out: OpsReport) -> None:
    from skillbuild.testing.chaos import Sandbox, copy_marketplace, synthetic_marketplace
    from skillbuild.testing.fakevertex import FakeVertex

    if os.geteuid() != 0:
        out.notes.append("tmpfs: not root, the full-cache run was skipped")
        return
    box = Sandbox(work / "tmpfs")
    copy_marketplace(synthetic_marketplace(work / "tmpfs-source", plugins), box)
    mount = box.root / "cache"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)], check=True)
    try:
        with FakeVertex(latency=latency, seed=seed + 2) as server:
            box.url = server.url
            full = _run(box, ["-n", "2"], log)
            stats = server.stats()
            answered = {r["digest"] for r in stats["requests"] if r["status"] == 200}
            db = next((box.root / "build").glob("*/audit.sqlite3"), None)
            rows, status = _audit_figures(db)
            out.tmpfs = {"ran": True, "plugins": plugins, "billed": stats["requests_total"], "api_calls": rows,
                         "exit": full.returncode, "exit_status": status, "tracebacks": full.stdout.count("Traceback"),
                         "disk_full_lines": sum("disk full" in ln.lower() or "no space" in ln.lower()
                                                for ln in full.stdout.splitlines())}
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
            before = stats["requests_total"]
            rerun = _run(box, ["-n", "2"], log)
            later = server.stats()["requests"][before:]
            out.tmpfs.update(rerun_exit=rerun.returncode,
                             paid_again=sum(1 for r in later if r["digest"] in answered),
                             rerun_requests=len(later))
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _audit_figures(db: Path | None) -> tuple[int, int | None]:
    """(api_calls rows, exit_status of the newest run) of an audit DB."""
    if db is None or not db.exists():
        return 0, None
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT COUNT(*) FROM api_calls").fetchone()[0]
        last = conn.execute("SELECT exit_status FROM runs ORDER BY started DESC, id DESC LIMIT 1").fetchone()
        return rows, (last[0] if last else None)
    finally:
        conn.close()


# ----------------------------------------------------------------------------- after the last run


def leftovers(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if any(mark in p.name for mark in LEFTOVER_MARKS))


def final(box, settings, server, log: Path, out: OpsReport) -> None:
    """Figures after one more full build (which reaps what killed runs left)."""
    from skillbuild.testing.chaos import _open_runs

    _run(box, ["-n", "2"], log)
    out.leftovers = leftovers(box.root)
    journal = settings.journal_dir
    out.journal_entries = sum(1 for p in journal.rglob("*") if p.is_file()) if journal.is_dir() else 0
    out.open_runs = _open_runs(settings.audit_db)
    out.billed = server.stats()["requests_total"]
    out.api_calls_rows, _ = _audit_figures(settings.audit_db)


# ----------------------------------------------------------------------------- figures


def rows(ops: OpsReport) -> list[tuple[str, str]]:
    out = [
        ("kills during `doit backup` (uninterrupted backup took)", f"{ops.backup_kills} ({ops.backup_seconds:.1f} s)"),
        ("exit status: backup run to the end / `doit backups verify=1`", f"{ops.backup_exit} / {ops.verify_exit}"),
        ("sqld SIGKILLed mid-upload: that backup's exit / the rerun's exit / verify=1",
         f"{ops.sqld_killed_exit} / {ops.resume_exit} / {ops.resume_verify_exit}"),
        ("the rerun's off-site line", ops.resume_line or "-"),
        ("kills during `doit restore` (plugin)", f"{ops.restore_kills} ({ops.restore_plugin or '-'})"),
        ("restore kills that changed the folder / left it half-restored before the next run",
         f"{ops.restore_changed_by_kill} / {ops.half_restored_after_kill}"),
        ("plugin half-restored after the next run", str(len(ops.half_restored_after_rerun))),
    ]
    t = ops.tmpfs
    if t.get("ran"):
        out += [
            (f"cache on a {TMPFS_SIZE} tmpfs ({t['plugins']} plugins): requests answered / `api_calls` rows",
             f"{t['billed']} / {t['api_calls']}"),
            ("full cache: exit status / `runs.exit_status` / tracebacks / lines naming the full disk",
             f"{t['exit']} / {t['exit_status']} / {t['tracebacks']} / {t['disk_full_lines']}"),
            ("after the tmpfs grew: rerun exit / requests / requests for prompts already answered",
             f"{t.get('rerun_exit')} / {t.get('rerun_requests')} / {t.get('paid_again')}"),
        ]
    if ops.ledger is not None:
        out.append(("after the operations: audit rows lost / calls paid twice for a completed phase",
                    f"{len(ops.ledger.rows_lost)} of {ops.ledger.completed} / {len(ops.ledger.paid_twice)}"))
    out += [
        ("billed calls (server requests) / `api_calls` rows / missing", f"{ops.billed} / {ops.api_calls_rows} / "
                                                                         f"{ops.billed_missing}"),
        ("leftovers after the final run (`.partial-*`, `.skillbuild-*`, `*.restore-*`)", str(len(ops.leftovers))),
        ("journal entries / open runs after the final run", f"{ops.journal_entries} / {ops.open_runs}"),
    ]
    return out + [("note", n) for n in ops.notes]
