"""A journal of the staging paths this tool creates, so the next run removes exactly what a killed process left.

Backups, restores, archives and off-site restores build their results under temporary folders and rename them
into place. Each such path is written to the journal (one small JSON file per path, named after the owning
process) *before* it is created, and its entry is deleted once the path is renamed or removed. A killed process
leaves its entries behind; `reap()` then removes the paths of processes that are gone, reading only the journal,
never walking the marketplace.

A step that must finish once begun (a restore moving its staged, verified files into a plugin folder) is
journalled as well: the next run completes it. A restore killed before that step leaves only its staging folder,
which the next run removes, so the plugin is rolled back to what it was; it is never left half-restored.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from skillbuild.store import writing

_counter = itertools.count()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), so a reused pid is not taken for the owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` still runs (and, given its start time, is the same process, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)


def _remove(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
        return True
    return False


@dataclass(frozen=True)
class Journal:
    folder: Path

    def _entry(self, record: dict) -> Path:
        pid = os.getpid()
        entry = self.folder / f"{pid}-{next(_counter)}.json"
        writing.atomic_write(entry, json.dumps({**record, "pid": pid, "started": _start_time(pid)}))
        return entry

    @contextmanager
    def staging(self, path: Path) -> Iterator[Path]:
        """Journal `path`, yield it for the caller to create and later rename or remove; on an error it is
        removed. The entry goes once the block ends either way."""
        entry = self._entry({"kind": "staging", "path": str(path)})
        try:
            yield path
        except BaseException:
            _remove(path)
            raise
        finally:
            entry.unlink(missing_ok=True)

    @contextmanager
    def step(self, kind: str, **record: str) -> Iterator[None]:
        """Journal a step that the next run must complete if this process dies inside it."""
        entry = self._entry({"kind": kind, **record})
        yield
        entry.unlink(missing_ok=True)

    def reap(self) -> list[str]:
        """Finish what dead processes left: remove their staging paths, complete or roll back their swaps.
        Returns one line per action, for the run's log."""
        if not self.folder.is_dir():
            return []
        done = []
        for entry in sorted(self.folder.glob("*.json"), key=_steps_first):
            try:
                record = json.loads(entry.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                entry.unlink(missing_ok=True)  # an entry cut short by a kill: its path was never created
                continue
            if process_alive(int(record.get("pid", 0)), record.get("started")):
                continue
            done += _recover(record)
            entry.unlink(missing_ok=True)
        return done


class Unjournalled(Journal):
    """For callers outside a run (a library call, a test): cleans up after errors, records nothing."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))

    @contextmanager
    def staging(self, path: Path) -> Iterator[Path]:
        try:
            yield path
        except BaseException:
            _remove(path)
            raise

    @contextmanager
    def step(self, kind: str, **record: str) -> Iterator[None]:
        yield

    def reap(self) -> list[str]:
        return []


def _steps_first(entry: Path) -> tuple[int, str]:
    """Steps are completed before staging paths are removed: a restore's step needs its staged files."""
    try:
        kind = json.loads(entry.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError):
        kind = None
    return (0 if kind not in (None, "staging") else 1, entry.name)


def _recover(record: dict) -> list[str]:
    if record.get("kind") == "restore":
        from skillbuild.safety.backup import finish_restore  # the step's own code finishes it

        finish_restore(Path(record["stage"]), Path(record["dest"]), Path(record["backup"]))
        return [f"completed an interrupted restore of {record['dest']}"]
    path = Path(record.get("path", ""))
    return [f"removed {path} (left by a killed run)"] if record.get("path") and _remove(path) else []
