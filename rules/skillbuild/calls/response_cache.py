"""Content-addressed cache of provider responses: a key that was paid for is never paid for again.

doit saves its state only when a run ends, so a run killed with SIGKILL forgets every task it
finished; this cache is what keeps those answers. Key = sha256 of the canonical JSON of
(model, prompt text, inputs, generation config). One file per key, `<dir>/<k[:2]>/<k>.json`,
written by store/writing.py's atomic write: a kill mid-write leaves either the old state or the
complete entry, never a torn one (a stray `.<key>.*.tmp` file left by a kill is ignored).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from skillbuild.store.writing import atomic_write

FORMAT = 1  # bump when the stored record changes shape; old entries then read as misses


def canonical(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class ResponseCache:
    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)

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
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key or record.get("format") != FORMAT:
            return None
        value = record.get("value")
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict) -> Path:
        """Store `value` (a JSON-able dict) atomically and durably."""
        if not isinstance(value, dict):
            raise TypeError("response cache values must be dicts")
        data = canonical({"format": FORMAT, "key": key, "value": value})
        # Owner-only, as entries have always been: an answer quotes the plugin's files.
        return atomic_write(self.path(key), data, mode=0o600, prefix=f".{key[:12]}.")

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def count(self) -> int:
        """Entries on disk (not __len__: an empty cache must still be truthy)."""
        return sum(1 for _ in self.dir.glob("??/*.json")) if self.dir.exists() else 0

