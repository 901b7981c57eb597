"""What a run reuses from the last one: answers computed from files, each kept with the stat keys of every file
and folder it was computed from, and served only while all of them are unchanged.

A stat key (inode, size, mtime and ctime in ns: `stat_key`) changes with every write, and ctime
cannot be set back by hand, so an entry can never answer for changed files: a file added, removed or renamed
changes its folder's key, an edit changes the file's. A no-op of a large marketplace then stats its files
instead of reading them (discovery's input lists, the inputs' hash, each SKILL.md's provenance).

One JSON file per marketplace in the cache folder (`Settings.memo_file`), read once and written at the end of
the process that loaded it, only when something was added. It is a cache: unreadable means empty, and a
write that fails (a full disk) is skipped, costing the next run the work again, never an answer.
"""
from __future__ import annotations

import atexit
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any


def stat_key(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """What changes whenever a file's bytes may have: inode, size, mtime and ctime (ns); None when missing.

    ctime cannot be set back by hand (a copy keeping mtime, `touch -d`), so an edit always changes the key."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


FORMAT = 1
Deps = list[list[Any]]  # [relative path ("" for the base folder itself), inode, size, mtime_ns, ctime_ns]


def deps_of(base: str, rels: list[str]) -> Deps | None:
    """The stat keys of `rels` under `base` now; None when one is missing (nothing to memo)."""
    out = []
    for rel in rels:
        key = stat_key(os.path.join(base, rel) if rel else base)
        if key is None:
            return None
        out.append([rel, *key])
    return out


# The code whose answers the memo keeps: a memo written by other code (an upgrade, an edit in a checkout)
# is not read, since the same files could now give other answers (a new secret pattern, a new input kind).
CODE = ("memo.py", "discovery.py", "fingerprints.py", "skill/skillmd.py", "skill/references.py")


@lru_cache(maxsize=1)
def code_version() -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


class Memo:
    """Entries by kind and key; `get` answers only while every dependency's stat key is unchanged."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.kinds: dict[str, dict[str, list]] = self._read()
        self.dirty = False
        self.pid = os.getpid()

    def _read(self) -> dict[str, dict[str, list]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != [FORMAT, code_version()] \
                or not isinstance(data.get("kinds"), dict):
            return {}
        return data["kinds"]

    def get(self, kind: str, key: str) -> Any:
        """The value kept for `key`, or None when there is none or a file it came from changed."""
        entry = self.kinds.get(kind, {}).get(key)
        if not entry:
            return None
        base, deps, value = entry
        for rel, *recorded in deps:
            now = stat_key(f"{base}/{rel}" if rel else base)
            if now is None or recorded != list(now):
                del self.kinds[kind][key]
                self.dirty = True
                return None
        return value

    def put(self, kind: str, key: str, base: str, deps: Deps | None, value: Any) -> None:
        """Keep `value`, computed from the files `deps` (`deps_of`, taken before they were read) under `base`."""
        if deps is None:
            return
        self.kinds.setdefault(kind, {})[key] = [base, deps, value]
        self.dirty = True

    def save(self) -> None:
        """Write the memo when something changed, atomically; from the process that read it only."""
        if self.path is None or not self.dirty or os.getpid() != self.pid:
            return
        from skillbuild.store import writing

        for entries in self.kinds.values():  # a plugin folder gone (removed, renamed): its entries go too
            for key in [k for k, (base, _, _) in entries.items() if not os.path.isdir(base)]:
                del entries[key]
        try:
            writing.atomic_write(self.path, json.dumps({"format": [FORMAT, code_version()], "kinds": self.kinds},
                                                       separators=(",", ":")))
            self.dirty = False
        except OSError:
            pass  # a cache: the next run computes again


_OPEN: dict[str, Memo] = {}
_NONE = Memo(None)
_ACTIVE: list[Memo] = [_NONE]


def memo_for(path: str | os.PathLike | None) -> Memo:
    """The process's memo at `path` (saved at exit), which becomes the `active` one; for None, one that
    lives in memory only."""
    if path is None:
        return _NONE
    name = os.fspath(path)
    if name not in _OPEN:
        _OPEN[name] = memo = Memo(name)
        atexit.register(memo.save)
    activate(_OPEN[name])
    return _OPEN[name]


def activate(memo: Memo) -> Memo:
    """Make `memo` the one `active` answers with; returns the one it was."""
    was, _ACTIVE[0] = _ACTIVE[0], memo
    return was


def active() -> Memo:
    """The memo of the marketplace this process loaded (tasks.py opens it), else the in-memory one."""
    return _ACTIVE[0]
