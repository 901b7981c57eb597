"""Fingerprints: the xxhash file checker doit uses, and content hashes for provenance and caches."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, Iterable

import xxhash
from doit.dependency import FileChangedChecker

from skillbuild.memo import active, deps_of, stat_key

CHUNK = 1 << 20
# doit asks `inspect.signature` of each `uptodate` callable for every task it checks: for an object's
# `__call__` that is a full inspection per task (0.1 ms; a no-op of 2,360 plugins checks 4,720), for a
# declared `__signature__` none. The up-to-date classes declare `(task, values)`.
UPTODATE_SIGNATURE = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("task", "values")])


def _file_digest(path: str | os.PathLike, digest) -> str:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_xxh3(path: str | os.PathLike) -> str:
    return _file_digest(path, xxhash.xxh3_128())


_DIGESTS: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def file_xxh3_once(path: str | os.PathLike) -> str:
    """`file_xxh3`, computed again only when the file's `stat_key` changed: for a file every plugin's
    up-to-date check hashes (the prompts)."""
    key, name = stat_key(path), os.fspath(path)
    seen = _DIGESTS.get(name)
    if key is not None and seen and seen[0] == key:
        return seen[1]
    digest = file_xxh3(path)
    if key is not None:
        _DIGESTS[name] = (key, digest)
    return digest


class XXHashChecker(FileChangedChecker):
    """mtime first (unchanged means same), then size (different means changed), then the xxh3 digest.

    So a `touch` costs one hash and never a rebuild, and a real edit is always seen.
    """

    def check_modified(self, file_path, file_stat, state):
        mtime, size, digest = state
        if file_stat.st_mtime == mtime:
            return False
        if file_stat.st_size != size:
            return True
        return digest != file_xxh3(file_path)

    def get_state(self, dep, current_state):
        mtime = os.path.getmtime(dep)
        if current_state and current_state[0] == mtime:
            return None  # unchanged: skip hashing
        return mtime, os.path.getsize(dep), file_xxh3(dep)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks: manifests, archives and backups use it."""
    return _file_digest(path, hashlib.sha256())


def text_hash(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def files_hash(paths: Iterable[Path], root: Path) -> str:
    """One digest over names and contents, so a rename or an edit both change it.

    Kept in the memo with each file's stat key: a no-op (and a load that asks for a plugin's analysis and its
    SKILL.md both) stats the files instead of reading them again."""
    paths = sorted(paths)
    base = str(root)
    cut = len(base) + 1
    rels = [str(p)[cut:] for p in paths]  # the inputs lie in `root`: discovery picked them there
    memo, key = active(), base + "\0" + "\n".join(rels)
    digest = memo.get("files", key)
    if digest is None:
        deps = deps_of(base, rels)  # before reading: a file changed meanwhile is hashed again next time
        digest = _files_digest(paths, root)
        memo.put("files", key, base, deps, digest)
    return digest


def _files_digest(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def canonical_hash(value: Any) -> str:
    return text_hash(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


class TreeUnchanged:
    """doit `uptodate`: true while the given files hash as they did at the last successful run.

    Computed only when doit checks the task (not at load), and used instead of file_dep where listing
    the files would make doit run the tasks that write them first.
    """
    __signature__ = UPTODATE_SIGNATURE

    def __init__(self, files_fn):
        self.files_fn = files_fn

    def __call__(self, task, values):
        digest = xxhash.xxh3_128()
        for path in sorted(self.files_fn()):
            digest.update(str(path).encode() + b"\0" + file_xxh3(path).encode())
        tree = digest.hexdigest()
        task.value_savers.append(lambda: {"tree": tree})
        return values.get("tree") == tree
