"""Content-addressed cache of provider responses: a key that was paid for is never paid for again.

doit saves its state only when a run ends, so a run killed with SIGKILL forgets every task it
finished; this cache is what keeps those answers. Key = sha256 of the canonical JSON of
(model, prompt text, inputs, generation config). One file per key, `<dir>/<k[:2]>/<k>.json`,
written by store/writing.py's atomic write: a kill mid-write leaves either the old state or the
complete entry, never a torn one (a stray `.<key>.*.tmp` file left by a kill is ignored).

A full disk never loses a paid answer: an entry the cache cannot take goes to the spill folder
(build/<m>/responses-spilled/, the folder of state to keep, often on another disk), else stays in this
process's memory for the run, and `CacheFull` fails the plugin with where the write failed and where the
answer is. A later run reads the spill folder too, so it never pays for that answer again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from skillbuild.store.writing import atomic_write, write_failure

FORMAT = 1  # bump when the stored record changes shape; old entries then read as misses


def canonical(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class CacheFull(Exception):
    """A paid answer could not be written to the cache; it is kept (`kept`: the spill file, or None when only this
    process holds it) and the message says where the write failed and where the answer is."""

    def __init__(self, message: str, path: Path, kept: Path | None):
        super().__init__(message)
        self.path, self.kept = path, kept


# Answers no file could take, for the rest of this process (cache dir -> key -> value).
_IN_MEMORY: dict[str, dict[str, dict]] = {}


class ResponseCache:
    """The cache at `directory`; `spill`: a folder on another disk that takes an answer the cache cannot (a full
    disk must never lose a paid answer). A lookup reads the cache, then the spill folder, then this process's
    memory; an answer found in the spill folder moves back into the cache once there is room."""

    def __init__(self, directory: str | os.PathLike[str], spill: str | os.PathLike[str] | None = None):
        self.dir = Path(directory)
        self.spill = Path(spill) if spill is not None else None
        self._memory = _IN_MEMORY.setdefault(str(self.dir), {})

    @staticmethod
    def key(model: str, prompt: str, inputs: Any, config: Any) -> str:
        """sha256 hex of the request identity."""
        blob = canonical({"format": FORMAT, "model": model, "prompt": prompt, "inputs": inputs,
                          "config": config})
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"response cache key must be 64 hex digits, got {key!r}")
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored value, or None for a miss (an unreadable entry is a miss, not an error)."""
        path = self.path(key)  # a malformed key is a caller bug: let it raise
        value = _read(path, key)
        if value is None and self.spill is not None:
            value = _read(self._spilled(key), key)
            if value is not None:
                self._unspill(key, value)
        return value if value is not None else self._memory.get(key)

    def put(self, key: str, value: dict) -> Path:
        """Store `value` (a JSON-able dict) atomically and durably. When the cache cannot take it (a full disk,
        any OSError) it is kept in the spill folder, else in memory, and CacheFull says so."""
        if not isinstance(value, dict):
            raise TypeError("response cache values must be dicts")
        data = canonical({"format": FORMAT, "key": key, "value": value})
        try:
            return _write(self.path(key), key, data)
        except OSError as exc:
            self._memory[key] = value
            failed = write_failure(exc, self.path(key))
            kept = self._spill_write(key, data)
            where = (f"the answer is kept at {kept}; a rerun uses it without paying again" if kept else
                     "the answer is kept in memory for this run only (the spill folder could not take it either)")
            raise CacheFull(f"{failed}; {where}. Free space there and run again", self.path(key), kept) from None

    def _spilled(self, key: str) -> Path:
        assert self.spill is not None
        return self.spill / key[:2] / f"{key}.json"

    def _spill_write(self, key: str, data: str) -> Path | None:
        if self.spill is None:
            return None
        try:
            return _write(self._spilled(key), key, data)
        except OSError:
            return None

    def _unspill(self, key: str, value: dict) -> None:
        """Move a spilled answer back into the cache; it stays spilled while the cache has no room."""
        try:
            _write(self.path(key), key, canonical({"format": FORMAT, "key": key, "value": value}))
        except OSError:
            return
        self._spilled(key).unlink(missing_ok=True)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def count(self) -> int:
        """Entries on disk (not __len__: an empty cache must still be truthy)."""
        return sum(1 for _ in self.dir.glob("??/*.json")) if self.dir.exists() else 0



def _read(path: Path, key: str) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("format") != FORMAT:
        return None
    value = record.get("value")
    return value if isinstance(value, dict) else None


def _write(path: Path, key: str, data: str) -> Path:
    # Owner-only, as entries have always been: an answer quotes the plugin's files.
    return atomic_write(path, data, mode=0o600, prefix=f".{key[:12]}.")
