"""Backups of a plugin folder before the tool changes it, and restores from them.

Layout: `<backups_root>/<run_id>/<plugin>/MANIFEST.sha256.json` plus `files/` holding the plugin folder as
it was (modes kept, symlinks kept as links). The manifest lists every file's SHA-256 and size, every
directory and every symlink target; a backup counts only once the copy has been verified against it.

A backup is complete: secret-looking files (`.env`, keys) are copied too, since a restore must put back
everything. Their contents are never read into logs or errors; only their hashes are stored.

A copy is built under a hidden `.partial` name (journalled, so the next run removes it if this one is killed)
and renamed into place when verified, so a kill midway never leaves something that looks like a backup. A file
unchanged since the plugin's previous backup is a hard link to that backup's copy, not a second copy: a large
data file costs its size once, however many backups keep it.

A restore first backs up the folder it is about to overwrite (reason "before-restore"), so a restore can itself
be undone. It stages the files that differ beside the plugin, verifies them, journals the step, then moves them
in: a restore killed at any point is completed (or, before the journal entry, rolled back) by the next run.
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
from skillbuild.safety.journal import Journal, Unjournalled
from skillbuild.statedir import is_state_dir
from skillbuild.store import writing

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
        # skillbuild's own state (a plugin whose source is the marketplace root holds it): never copied, and a
        # restore never removes it as an extra
        dirnames[:] = [d for d in dirnames if not is_state_dir(base / d)]
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


def _copy_tree(src: Path, dst: Path, files: dict, links: dict, dirs: list[str],
               previous: tuple[Path, dict] | None = None) -> None:
    """Copy a scanned tree; a file identical (content and mode) to the previous backup's is hard-linked to it."""
    dst.mkdir(parents=True)
    for rel in dirs:
        (dst / rel).mkdir(parents=True, exist_ok=True)
    prev_root, prev_files = previous or (None, {})
    for rel, want in files.items():
        if prev_files.get(rel) == want and _try_link(prev_root / rel, dst / rel):
            continue
        shutil.copy2(src / rel, dst / rel, follow_symlinks=False)
    for rel, target in links.items():
        os.symlink(target, dst / rel)
    for rel in reversed(dirs):  # after the contents: a read-only folder would refuse them
        shutil.copystat(src / rel, dst / rel, follow_symlinks=False)


def _try_link(existing: Path, new: Path) -> bool:
    try:
        os.link(existing, new)
        return True
    except OSError:  # the old copy is gone, or the filesystem has no hard links: copy instead
        return False


def _previous(backups_root: Path, plugin: str) -> tuple[Path, dict] | None:
    """(files folder, manifest files) of the plugin's newest intact backup, for hard links."""
    for info in reversed(list_backups(backups_root, plugin)):
        try:
            return info.path / FILES, read_manifest(info.path)["files"]
        except BackupError:
            continue
    return None


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
    reason: str = REASON_CHANGE, journal: Journal | None = None,
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
    previous = _previous(Path(backups_root), plugin)
    partial = final.parent / f".{plugin}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    try:  # a write to an open file names no file: say it was this backup's disk
        with _journal(journal).staging(partial):
            _copy_tree(src, partial / FILES, files, links, dirs, previous)
            manifest = {
                "format": FORMAT, "plugin": plugin, "run_id": run_id, "reason": reason,
                "source": str(src.resolve()),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "files": files, "symlinks": links, "dirs": dirs,
            }
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            _fsync_tree(partial)
            _raise_if_invalid(partial)
            os.replace(partial, final)
    except OSError as exc:
        writing.name_unnamed(exc, partial)
        raise
    return final


def _journal(journal: Journal | None) -> Journal:
    """The run's journal; direct callers outside a run get clean-up on errors only."""
    return journal or Unjournalled()


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


def prune(backups_root: str | os.PathLike, plugin: str, keep_last: int, keep_bytes: int = 0) -> list[Path]:
    """Delete all but the newest `keep_last` backups of `plugin` of each reason, then, when `keep_bytes` > 0,
    the oldest ones while the plugin's backups use more than `keep_bytes`; returns what was deleted.

    Each reason counts apart, so a series of restores (each saving the state it replaces) never pushes out
    the backups taken before a change. keep_last must be at least 1: a plugin's only backup is never deleted.
    The byte limit counts a file hard-linked into several backups once (it costs its size once on disk), and
    never deletes the newest backup nor the newest one taken before a change (what `doit restore` puts back).
    """
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"backup retention keep_last={keep_last!r}: must be an integer ≥ 1 (the newest backup of a "
                         f"plugin is always kept)")
    backups = list_backups(backups_root, plugin)
    doomed = [b for b in backups if b not in [x for x in backups if x.reason == b.reason][-keep_last:]]
    left = [b for b in backups if b not in doomed]
    if keep_bytes > 0:
        doomed += _over_bytes(left, keep_bytes)
    for info in doomed:
        shutil.rmtree(info.path)
        try:
            info.path.parent.rmdir()  # the run folder, once no plugin is left in it
        except OSError:
            pass
    return [info.path for info in doomed]


def _over_bytes(backups: list[BackupInfo], keep_bytes: int) -> list[BackupInfo]:
    """The oldest of `backups` (oldest first) to delete so the rest use at most `keep_bytes`, sparing the newest
    backup and the newest one taken before a change."""
    spared = {backups[-1].path} if backups else set()
    spared |= {b.path for b in [b for b in backups if b.reason == REASON_CHANGE][-1:]}
    left, doomed = list(backups), []
    for info in backups:
        if backups_bytes(b.path for b in left) <= keep_bytes:
            break
        if info.path in spared:
            continue
        left.remove(info)
        doomed.append(info)
    return doomed


def backups_bytes(paths) -> int:
    """Bytes the files under `paths` use, each inode counted once (hard links between backups cost nothing)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in paths:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


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


def _remove_path(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def restore_plugin(
    backups_root: str | os.PathLike, plugin: str, dest_plugin_dir: str | os.PathLike, at_run: str | None = None,
    run_id: str | None = None, journal: Journal | None = None,
) -> RestoreResult:
    """Put `plugin` back as it was in run `at_run` (default: its newest before-change backup).

    The backup is verified first (a tampered copy is refused, nothing changed). When `run_id` (the restore's
    own run) is given and the folder exists, its current state is backed up under that run first. The files
    that differ are staged beside the folder and verified; then, journalled, they are moved in and what the
    backup does not have is removed; the result is verified against the manifest.
    """
    started = time.monotonic()
    backups_root, dest = Path(backups_root), Path(dest_plugin_dir)
    info = _choose(backups_root, plugin, at_run)
    _raise_if_invalid(info.path)
    manifest = read_manifest(info.path)
    journal = _journal(journal)
    safety = None
    if run_id and dest.is_dir() and run_id != info.run_id:
        safety = backup_plugin(backups_root, run_id, plugin, dest, reason=REASON_RESTORE, journal=journal)
    stage = dest.parent / f"{TEMP_PREFIX}{plugin}-{os.getpid()}"
    with journal.staging(stage):
        written, unchanged = _stage(info.path / FILES, dest, manifest, stage)
        with journal.step("restore", stage=str(stage), dest=str(dest), backup=str(info.path)):
            removed = finish_restore(stage, dest, info.path)
        shutil.rmtree(stage, ignore_errors=True)  # its folders, emptied by the moves; journalled until gone
    files, links, dirs = _scan(dest)
    problems = _compare(manifest, files, links, dirs, where=dest)
    if problems:
        raise BackupError(f"restore of {plugin!r} into {dest} did not verify: {'; '.join(problems[:5])}")
    return RestoreResult(plugin, info.run_id, info.path, safety, written, unchanged, removed,
                         time.monotonic() - started)


def _same_file(path: Path, want: dict) -> bool:
    return path.is_file() and not path.is_symlink() and sha256_file(path) == want["sha256"]


def _stage(src: Path, dest: Path, manifest: dict, stage: Path) -> tuple[int, int]:
    """Copy into `stage` every file and link of the backup that `dest` lacks or holds differently, then check
    the copies; returns (staged, already identical). Nothing in `dest` changes here."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    staged = unchanged = 0
    for rel, want in sorted(manifest["files"].items()):
        if _same_file(dest / rel, want):
            unchanged += 1
            continue
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, stage / rel, follow_symlinks=False)
        if sha256_file(stage / rel) != want["sha256"]:
            raise BackupError(f"staging {rel} for the restore gave different bytes than the backup; nothing changed")
        staged += 1
    for rel, link in sorted(manifest.get("symlinks", {}).items()):
        target = dest / rel
        if not (target.is_symlink() and os.readlink(target) == link):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link, stage / rel)
            staged += 1
    _fsync_tree(stage)
    return staged, unchanged


def finish_restore(stage: Path, dest: Path, backup_path: Path) -> int:
    """Move the staged files into `dest`, remove what the backup lacks, fix modes and folders; returns how many
    paths were removed. Safe to run again after a kill: it picks up where the last attempt stopped."""
    manifest = read_manifest(backup_path)
    want_files, want_links = manifest["files"], manifest.get("symlinks", {})
    want_dirs = set(manifest.get("dirs", []))
    dest.mkdir(parents=True, exist_ok=True)
    removed = _remove_extras(dest, want_files, want_links, want_dirs)
    for rel in sorted(want_dirs):
        d = dest / rel
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            _remove_path(d)
        d.mkdir(parents=True, exist_ok=True)
    touched = set()
    for rel in sorted(set(want_files) | set(want_links)):
        staged, target = stage / rel, dest / rel
        if not (staged.exists() or staged.is_symlink()):
            continue  # identical already, or moved in by an earlier attempt
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staged, target)  # the staged copy was fsynced: only the rename is left to make durable
        touched.add(target.parent)
    for folder in sorted(touched):
        writing.fsync_dir(folder)
    for rel, want in want_files.items():
        mode = int(want["mode"], 8)
        if (dest / rel).is_file() and stat.S_IMODE((dest / rel).stat().st_mode) != mode:
            os.chmod(dest / rel, mode)
    for rel in sorted(want_dirs):
        shutil.copystat(backup_path / FILES / rel, dest / rel, follow_symlinks=False)
    return removed


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
