"""One build of a marketplace at a time: an advisory lock on cache/<m>/run.lock for the whole run.

Two overlapping runs would race on the same SKILL.md files, backups and doit state. The lock is
`fcntl.flock` on an open file: the kernel drops it when the holding process ends, however it ends
(SIGKILL and power cuts included), so a lock can never be left stale. Forked doit workers inherit the
open file, so the lock stays held until the last of them is gone. The file records the holder
(pid, run id, start time, command) only to tell the second run who it is waiting for.

Policy: the second run exits at once with status 75 (EX_TEMPFAIL: "try again later") and a message
naming the holder, or waits up to `lock_wait` seconds for it to finish first. Runs that cannot touch
plugins (`doit list`, `doit status`, `doit plan`, ...) never take the lock.

Once the lock is held nothing else is writing, so temp files a killed run left behind are removed.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from skillbuild.config import LOCK_NAME  # noqa: F401  (the lock file's name; settings.lock_file is its path)
from skillbuild.memo import Memo
from skillbuild.store import writing

EXIT_LOCKED = 75  # sysexits.h EX_TEMPFAIL: cron wrappers and CI can tell "busy" from "failed"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Holder:
    pid: int | None
    run_id: str | None
    started: str | None
    command: str | None
    host: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "a run that has not written its details yet"
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        return (f"pid {self.pid}{where}, run {self.run_id}, started {self.started}"
                + (f": `{self.command}`" if self.command else ""))


class RunLocked(Exception):
    """Another run holds the marketplace's lock; `holder` says which."""

    def __init__(self, path: Path, holder: Holder, waited: float):
        self.path, self.holder, self.waited = path, holder, waited
        waited_text = f" after waiting {waited:.0f} s" if waited >= 1 else ""
        super().__init__(
            f"skillbuild: another build of this marketplace is running ({holder.describe()}); this run "
            f"stopped{waited_text} before touching anything (exit status {EXIT_LOCKED}). Let that run finish, "
            f"or set lock_wait=SECONDS (SKILLBUILD_LOCK_WAIT) to wait for it. Lock file: {path}")


def read_holder(path: Path) -> Holder:
    """The holder recorded in the lock file; empty fields while a new holder is still writing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    pid = data.get("pid")
    return Holder(pid if isinstance(pid, int) else None, data.get("run_id"), data.get("started"),
                  data.get("command"), data.get("host"))


class RunLock:
    """The lock file of one marketplace. `acquire()` or RunLocked; held until `release()` or exit."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, run_id: str, command: str, wait_seconds: float = 0.0,
                on_wait: Callable[[Holder], None] | None = None) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a": never truncate here; the holder's details stay readable until we own the lock.
        handle = open(self.path, "a+", encoding="utf-8")
        began = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - began
                if waited >= wait_seconds:
                    handle.close()
                    raise RunLocked(self.path, read_holder(self.path), waited) from None
                if not told and on_wait:
                    on_wait(read_holder(self.path))
                    told = True
                time.sleep(min(POLL_SECONDS, max(wait_seconds - waited, 0.01)))
        self._handle = handle
        self._write_holder(run_id, command)
        return self

    def _write_holder(self, run_id: str, command: str) -> None:
        assert self._handle is not None
        record = {"pid": os.getpid(), "run_id": run_id, "command": command, "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        fd = self._handle.fileno()
        try:  # unbuffered: a write the disk refused leaves nothing behind to fail again at close
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except OSError:
            pass  # a full disk: the lock is held all the same; a waiting run just cannot name its holder

    def release(self) -> None:
        """Give the lock up (only the process that took it; a forked worker's copy is left alone)."""
        if self._handle is None:
            return
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


# The one lock of this process: a module global keeps the file open (closing it would release the lock).
_HELD: dict[Path, RunLock] = {}


def acquire_or_exit(path: Path, run_id: str, argv: list[str], wait_seconds: float = 0.0,
                    stream: IO[str] | None = None) -> RunLock:
    """Take the run lock for this process, or print why not and exit with EXIT_LOCKED.

    Called from skillbuild/run.py before doit has run any task or forked any worker: exiting
    there leaves every file as it was.
    """
    path = Path(path)
    if path in _HELD and _HELD[path].held:
        return _HELD[path]
    out = stream if stream is not None else sys.stderr
    command = " ".join(["doit", *argv])

    def waiting(holder: Holder) -> None:
        out.write(f"skillbuild: waiting up to {wait_seconds:g} s for the other build of this marketplace "
                  f"({holder.describe()}) to finish\n")
        out.flush()

    try:
        lock = RunLock(path).acquire(run_id, command, wait_seconds, on_wait=waiting)
    except RunLocked as exc:
        out.write(f"{exc}\n")
        out.flush()
        sys.stdout.flush()
        os._exit(EXIT_LOCKED)  # not SystemExit: doit's own cleanup would then report a half-made run
    _HELD[path] = lock
    return lock


def release(path: Path) -> None:
    lock = _HELD.pop(Path(path), None)
    if lock is not None:
        lock.release()


def sweep_leftovers(folders, responses_dir: Path, skill_folders=(), memo: Memo | None = None) -> list[Path]:
    """Remove temp files that a killed run left (only safe while holding the lock); returns them.

    Atomic writes go through `.skillbuild-*.tmp` files beside their target, in the folders given (the state
    folders: analysis, rejected, originals, journal, the build folders) and `skill_folders` (each plugin's
    skill folder), and the response cache through `responses/<xx>/.<key>.*.tmp`; none of them is ever a
    finished file. Only those folders are listed, never the marketplace tree (a large one costs seconds to
    walk), and a skill folder found clean before only once it changed (`memo`: one stat each, where the state
    folders change on every run). A restore's temp names carry its pid: a live restore's files are left alone.
    """
    found = writing.temps_in(folders) + writing.temps_in(skill_folders, memo)
    found += sorted(Path(responses_dir).glob("??/.*.tmp"))
    removed = []
    for path in found:
        if _live_restore_temp(path):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def _live_restore_temp(path: Path) -> bool:
    from skillbuild.safety.backup import TEMP_PREFIX as RESTORE_PREFIX

    if not path.name.startswith(RESTORE_PREFIX):
        return False
    pid_text = path.name[len(RESTORE_PREFIX):].removeprefix("link-").split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
