"""Backups of a plugin folder before the tool changes it, and restores from them.

Layout: `<backups_root>/<run_id>/<plugin>/MANIFEST.sha256.json` plus `files/` holding the plugin folder as
it was (modes kept, symlinks kept as links). The manifest lists every file's SHA-256 and size, every
directory and every symlink target; a backup counts only once the copy has been verified against it.

A backup is complete: secret-looking files (`.env`, keys) are copied too, since a restore must put back
everything. Their contents are never read into logs or errors; only their hashes are stored.

A copy is built under a hidden `.partial` name and renamed into place when verified, so a kill midway
never leaves something that looks like a backup. A restore first backs up the folder it is about to
overwrite (reason "before-restore"), so a restore can itself be undone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from skillbuild.fingerprints import sha256_file  # noqa: F401  (also re-exported)
from skillbuild.store.writing import atomic_copy

MANIFEST = "MANIFEST.sha256.json"
FILES = "files"
FORMAT = 1
REASON_CHANGE = "before-change"
REASON_RESTORE = "before-restore"
TEMP_PREFIX = ".skillbuild-restore-"  # store/writing.py's leftover_temps() finds ".skillbuild-*.tmp"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


class BackupError(Exception):
    """A backup could not be made, verified or restored; the message names the path and what to do."""


@dataclass(frozen=True)
class BackupInfo:
    run_id: str
    plugin: str
    path: Path  # <backups_root>/<run_id>/<plugin>
    reason: str  # before-change | before-restore | unknown (manifest unreadable)
    created: str | None
    files: int


@dataclass(frozen=True)
class RestoreResult:
    plugin: str
    run_id: str  # the run whose backup was restored
    backup_path: Path
    safety_backup: Path | None  # the state just replaced, backed up first
    written: int  # files put back because they differed or were missing
    unchanged: int  # files already identical
    removed: int  # files and empty directories that were not in the backup
    seconds: float


def _check_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.match(value or ""):
        raise BackupError(f"{kind} {value!r} cannot be used as a folder name in the backups; use letters, digits, ._-")
    return value




def _scan(root: Path) -> tuple[dict[str, dict], dict[str, str], list[str]]:
    """(files {rel: {sha256, bytes, mode}}, symlinks {rel: target}, dirs [rel]) under root, links not followed."""
    files: dict[str, dict] = {}
    links: dict[str, str] = {}
    dirs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            full = base / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                links[rel] = os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                dirs.append(rel)
            elif stat.S_ISREG(st.st_mode):
                files[rel] = {"sha256": sha256_file(full), "bytes": st.st_size, "mode": f"{stat.S_IMODE(st.st_mode):04o}"}
            else:
                raise BackupError(f"{full}: not a regular file, directory or symlink (a socket or device?); move it "
                                  f"out of the plugin folder")
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
    return files, links, sorted(dirs)


def _copy_tree(src: Path, dst: Path, files: dict, links: dict, dirs: list[str]) -> None:
    dst.mkdir(parents=True)
    for rel in dirs:
        (dst / rel).mkdir(parents=True, exist_ok=True)
    for rel in files:
        shutil.copy2(src / rel, dst / rel, follow_symlinks=False)
    for rel, target in links.items():
        os.symlink(target, dst / rel)
    for rel in reversed(dirs):  # after the contents: a read-only folder would refuse them
        shutil.copystat(src / rel, dst / rel, follow_symlinks=False)


def _fsync_tree(root: Path) -> None:
    """Flush copied files so a backup that verified is still there after a power cut."""
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())


def backup_plugin(
    backups_root: str | os.PathLike, run_id: str, plugin: str, plugin_dir: str | os.PathLike,
    reason: str = REASON_CHANGE,
) -> Path:
    """Copy `plugin_dir` to `<backups_root>/<run_id>/<plugin>/`, verify it, return that path.

    A second call in the same run returns the first backup (the state before the run changed anything).
    """
    _check_name("run id", run_id)
    _check_name("plugin", plugin)
    src = Path(plugin_dir)
    if not src.is_dir():
        raise BackupError(f"cannot back up plugin {plugin!r}: {src} is not a folder")
    final = Path(backups_root) / run_id / plugin
    if final.exists():
        _raise_if_invalid(final)
        return final
    files, links, dirs = _scan(src)
    partial = final.parent / f".{plugin}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    try:
        _copy_tree(src, partial / FILES, files, links, dirs)
        manifest = {
            "format": FORMAT, "plugin": plugin, "run_id": run_id, "reason": reason, "source": str(src.resolve()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "files": files, "symlinks": links, "dirs": dirs,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _fsync_tree(partial)
        _raise_if_invalid(partial)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def read_manifest(path: str | os.PathLike) -> dict:
    mpath = Path(path) / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{mpath}: manifest missing or unreadable ({exc.__class__.__name__}); this backup cannot "
                          f"be verified, pick another with at=RUN") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{mpath}: not a skillbuild backup manifest (format {FORMAT}); pick another with at=RUN")
    return manifest


def verify_backup(path: str | os.PathLike) -> list[str]:
    """Problems found comparing the backup at `path` with its manifest; an empty list means it is intact."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except BackupError as exc:
        return [str(exc)]
    root = path / FILES
    if not root.is_dir():
        return [f"{root}: the copied files are missing"]
    try:
        files, links, dirs = _scan(root)
    except BackupError as exc:
        return [str(exc)]
    return _compare(manifest, files, links, dirs, where=root)


def _compare(manifest: dict, files: dict, links: dict, dirs: list[str], where: Path, modes: bool = True) -> list[str]:
    problems = []
    for rel, want in sorted(manifest["files"].items()):
        got = files.get(rel)
        if got is None:
            problems.append(f"{where / rel}: missing")
        elif got["sha256"] != want["sha256"] or got["bytes"] != want["bytes"]:
            problems.append(f"{where / rel}: content differs from the manifest (SHA-256 mismatch)")
        elif modes and got["mode"] != want["mode"]:
            problems.append(f"{where / rel}: mode {got['mode']} differs from the manifest's {want['mode']}")
    for rel in sorted(set(files) - set(manifest["files"])):
        problems.append(f"{where / rel}: not in the manifest")
    want_links = manifest.get("symlinks", {})
    for rel in sorted(set(want_links) | set(links)):
        if links.get(rel) != want_links.get(rel):
            problems.append(f"{where / rel}: symlink differs from the manifest")
    for rel in sorted(set(manifest.get("dirs", [])) - set(dirs)):
        problems.append(f"{where / rel}: directory missing")
    return problems


def _raise_if_invalid(path: Path) -> None:
    problems = verify_backup(path)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BackupError(f"backup {path} failed verification: {shown}")


def list_backups(backups_root: str | os.PathLike, plugin: str) -> list[BackupInfo]:
    """Backups of `plugin`, oldest first (run ids sort by time)."""
    root = Path(backups_root)
    if not root.is_dir():
        return []
    out = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = run_dir / plugin
        if not path.is_dir():
            continue
        try:
            m = read_manifest(path)
            out.append(BackupInfo(run_dir.name, plugin, path, m.get("reason", REASON_CHANGE), m.get("created"),
                                  len(m["files"])))
        except BackupError:
            out.append(BackupInfo(run_dir.name, plugin, path, "unknown", None, 0))
    return out


def prune(backups_root: str | os.PathLike, plugin: str, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` backups of `plugin` of each reason; returns what was deleted.

    Each reason counts apart, so a series of restores (each saving the state it replaces) never pushes out
    the backups taken before a change. keep_last must be at least 1: a plugin's only backup is never deleted.
    """
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"backup retention keep_last={keep_last!r}: must be an integer ≥ 1 (the newest backup of a "
                         f"plugin is always kept)")
    backups = list_backups(backups_root, plugin)
    doomed = [b for b in backups if b not in [x for x in backups if x.reason == b.reason][-keep_last:]]
    for info in doomed:
        shutil.rmtree(info.path)
        try:
            info.path.parent.rmdir()  # the run folder, once no plugin is left in it
        except OSError:
            pass
    return [info.path for info in doomed]


def _choose(backups_root: Path, plugin: str, at_run: str | None) -> BackupInfo:
    backups = list_backups(backups_root, plugin)
    if at_run:
        for info in backups:
            if info.run_id == at_run:
                return info
        runs = ", ".join(b.run_id for b in backups) or "none"
        raise BackupError(f"no backup of plugin {plugin!r} from run {at_run!r} under {backups_root} (runs: {runs})")
    changes = [b for b in backups if b.reason == REASON_CHANGE]
    if not changes:
        raise BackupError(f"no backup of plugin {plugin!r} under {backups_root}; nothing to restore")
    return changes[-1]


def _write_atomic(src: Path, dest: Path, mode: int) -> None:
    # The pid in the temp name tells the leftover sweep (safety/runlock.py) a live restore's files apart.
    atomic_copy(src, dest, mode=mode, prefix=f"{TEMP_PREFIX}{os.getpid()}-")


def _link_atomic(target: str, dest: Path) -> None:
    tmp = dest.parent / f"{TEMP_PREFIX}link-{os.getpid()}-{dest.name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, dest)


def _remove_path(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def restore_plugin(
    backups_root: str | os.PathLike, plugin: str, dest_plugin_dir: str | os.PathLike, at_run: str | None = None,
    run_id: str | None = None,
) -> RestoreResult:
    """Put `plugin` back as it was in run `at_run` (default: its newest before-change backup).

    The backup is verified first (a tampered copy is refused, nothing changed). When `run_id` (the restore's
    own run) is given and the folder exists, its current state is backed up under that run first. Files are
    replaced one by one atomically; files and directories absent from the backup are removed; the result is
    verified against the manifest.
    """
    started = time.monotonic()
    backups_root, dest = Path(backups_root), Path(dest_plugin_dir)
    info = _choose(backups_root, plugin, at_run)
    _raise_if_invalid(info.path)
    manifest = read_manifest(info.path)
    safety = None
    if run_id and dest.is_dir() and run_id != info.run_id:
        safety = backup_plugin(backups_root, run_id, plugin, dest, reason=REASON_RESTORE)
    written, unchanged, removed = _apply(info.path / FILES, dest, manifest)
    files, links, dirs = _scan(dest)
    problems = _compare(manifest, files, links, dirs, where=dest)
    if problems:
        raise BackupError(f"restore of {plugin!r} into {dest} did not verify: {'; '.join(problems[:5])}")
    return RestoreResult(plugin, info.run_id, info.path, safety, written, unchanged, removed,
                         time.monotonic() - started)


def _apply(src: Path, dest: Path, manifest: dict) -> tuple[int, int, int]:
    dest.mkdir(parents=True, exist_ok=True)
    want_files, want_links = manifest["files"], manifest.get("symlinks", {})
    want_dirs = set(manifest.get("dirs", []))
    removed = _remove_extras(dest, want_files, want_links, want_dirs)
    for rel in sorted(want_dirs):
        d = dest / rel
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            _remove_path(d)
        d.mkdir(parents=True, exist_ok=True)
    written = unchanged = 0
    for rel, want in sorted(want_files.items()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = int(want["mode"], 8)
        if target.is_file() and not target.is_symlink() and sha256_file(target) == want["sha256"]:
            if stat.S_IMODE(target.stat().st_mode) != mode:
                os.chmod(target, mode)
            unchanged += 1
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        _write_atomic(src / rel, target, mode)
        written += 1
    for rel, link in sorted(want_links.items()):
        target = dest / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        if not (target.is_symlink() and os.readlink(target) == link):
            _link_atomic(link, target)
            written += 1
    for rel in sorted(want_dirs):
        shutil.copystat(src / rel, dest / rel, follow_symlinks=False)
    return written, unchanged, removed


def _remove_extras(dest: Path, want_files: dict, want_links: dict, want_dirs: set[str]) -> int:
    """Delete what the backup does not have (e.g. a SKILL.md written after it), deepest paths first."""
    files, links, dirs = _scan(dest)
    extras = [r for r in files if r not in want_files] + [r for r in links if r not in want_links]
    extras += [r for r in dirs if r not in want_dirs]
    count = 0
    for rel in sorted(extras, key=lambda r: r.count("/"), reverse=True):
        p = dest / rel
        if p.is_symlink() or p.exists():
            _remove_path(p)
            count += 1
    return count
