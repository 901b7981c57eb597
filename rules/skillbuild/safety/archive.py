"""The hashed local backup behind `doit backup`.

One backup is one folder `<out_root>/<timestamp>/` holding:
  plugins-<timestamp>.tar.gz         catalog + plugin folders, paths relative to the marketplace root
  plugins-<timestamp>.tar.gz.sha256  `sha256sum` format
  manifest.json                      size and SHA-256 of every archived file
  audit.sqlite3, audit.sql           snapshot (SQLite backup API) and dump of the audit DB, if it exists
  plugin-inventory.json              each plugin's manifest, path, SKILL.md size and hash
  backup-info.json                   time, tool version, counts, sizes, hashes (written last)
The folder is built under a dot-named temp name and renamed at the end, so an interrupted backup never
leaves a folder that looks complete.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterable

from skillbuild.discovery import inside, looks_like_credentials
from skillbuild.fingerprints import sha256_file  # noqa: F401  (also re-exported)
from skillbuild.statedir import is_state_dir

CATALOG = PurePosixPath(".claude-plugin/marketplace.json")
MANIFEST = "manifest.json"
INVENTORY = "plugin-inventory.json"
INFO = "backup-info.json"
AUDIT_SNAPSHOT = "audit.sqlite3"
AUDIT_DUMP = "audit.sql"
TMP_PREFIX = ".tmp-"
# Editor droppings, interrupted atomic writes and rebuildable caches never belong in a backup.
SKIP_NAMES = (".git", "__pycache__", ".mypy_cache", "node_modules", ".venv", "venv", ".DS_Store",
              "*.tmp", "*.temp", "*~", ".#*", "*.swp", "*.swo", "*.pyc")
_READ = 1 << 20


class ArchiveError(Exception):
    """A backup could not be made or read; the message names the file and the fix."""


@dataclass(frozen=True)
class ArchiveResult:
    folder: Path
    archive: Path
    archive_sha256: str
    archive_size: int
    file_count: int
    total_bytes: int
    plugin_count: int
    audit_snapshot: Path | None
    seconds: float
    secret_files_left_out: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        audit = self.audit_snapshot.name if self.audit_snapshot else "no audit DB yet (skipped)"
        out = [
            f"backup: {self.folder}",
            f"  archive {self.archive.name}: {self.archive_size:,} bytes, sha256 {self.archive_sha256}",
            f"  {self.file_count} files ({self.total_bytes:,} bytes), {self.plugin_count} plugins, audit: {audit}",
            f"  verified against manifest in {self.seconds:.2f} s",
        ]
        if self.secret_files_left_out:
            out.append(f"  {len(self.secret_files_left_out)} secret-looking files left out (kept on this machine "
                       f"only): {', '.join(self.secret_files_left_out)}")
        return out


@dataclass(frozen=True)
class LocalBackup:
    folder: Path
    state: str  # "complete" | "incomplete"
    created: str = ""
    archive_size: int = 0
    file_count: int = 0
    archive_sha256: str = ""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.state != "complete":
            return f"{self.folder.name}  INCOMPLETE (interrupted backup, safe to delete)"
        checked = "" if not self.problems else "  PROBLEMS: " + "; ".join(self.problems)
        return (f"{self.folder.name}  {self.created}  {self.file_count} files  "
                f"{self.archive_size:,} bytes  sha256 {self.archive_sha256[:12]}{checked}")


# ---------------------------------------------------------------- hashing helpers



def _sha256_stream(fh) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    while block := fh.read(_READ):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: unreadable ({exc}); the backup folder is damaged, make a new one "
                           "with `doit backup`") from None


# ---------------------------------------------------------------- file selection

def _skipped(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in SKIP_NAMES)


# Secret-looking files (discovery's credentials patterns) stay on this machine: the archive goes to an
# off-site database. Only their paths are recorded (backup-info.json), so a restore can say what to put back.
is_secret = looks_like_credentials


def _walk(folder: Path, root: Path) -> Iterable[Path]:
    """Files and in-tree file symlinks under `folder`; directory symlinks are not followed."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames
                             if not _skipped(d) and not os.path.islink(os.path.join(dirpath, d))
                             and not is_state_dir(Path(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if _skipped(name):
                continue
            if path.is_symlink() and not (inside(path, root) and path.resolve().is_file()):
                continue  # dangling, or leaving the marketplace
            yield path


def _plugin_dir(root: Path, rel: str | os.PathLike) -> Path:
    rel_path = PurePosixPath(str(rel).replace(os.sep, "/"))
    folder = root / rel_path
    if rel_path.is_absolute() or ".." in rel_path.parts or not inside(folder, root):
        raise ArchiveError(f"plugin path {rel!s} is not inside the marketplace {root}: "
                           "fix the plugin's `source` in .claude-plugin/marketplace.json")
    if not folder.is_dir():
        raise ArchiveError(f"plugin folder {folder} does not exist: fix its `source` in "
                           ".claude-plugin/marketplace.json or restore the folder")
    return folder


def _select(root: Path, plugin_paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(files to archive, secret-looking files left out), both sorted by relative path."""
    catalog = root / CATALOG
    if not catalog.is_file():
        raise ArchiveError(f"{catalog} not found: the marketplace root must hold .claude-plugin/marketplace.json")
    found = {catalog}
    for rel in plugin_paths:
        found.update(_walk(_plugin_dir(root, rel), root))
    ordered = sorted(found, key=lambda p: p.relative_to(root).as_posix())
    return [p for p in ordered if not is_secret(p.name)], [p for p in ordered if is_secret(p.name)]


def archive_files(marketplace: Path, plugin_paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Absolute paths of every marketplace file a backup covers, sorted; also the task's file_dep."""
    return _select(Path(marketplace).resolve(), plugin_paths)[0]


# ---------------------------------------------------------------- writing the archive

def _tar_info(path: Path, arcname: str) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(arcname)
    info.mtime = int(st.st_mtime)
    info.mode = st.st_mode & 0o777
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_symlink():
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    else:
        info.size = st.st_size
    return info


def _manifest_entry(path: Path, arcname: str) -> dict:
    if path.is_symlink():
        return {"path": arcname, "size": 0, "sha256": "", "link": os.readlink(path)}
    return {"path": arcname, "size": path.stat().st_size, "sha256": sha256_file(path)}


def write_tar(root: Path, files: list[Path], target: Path) -> list[dict]:
    """Deterministic tar.gz (sorted, no owner names, gzip mtime 0); returns the manifest entries."""
    entries = []
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            arcname = path.relative_to(root).as_posix()
            entry = _manifest_entry(path, arcname)
            info = _tar_info(path, arcname)
            if info.issym():
                tar.addfile(info)
            else:
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
                if path.stat().st_size != entry["size"]:
                    raise ArchiveError(f"{path} changed while it was archived: rerun `doit backup` "
                                       "when no build is writing to the marketplace")
            entries.append(entry)
    return entries


# ---------------------------------------------------------------- audit DB and inventory

def snapshot_audit_db(audit_db: Path, folder: Path) -> tuple[Path, Path]:
    """Consistent copy through SQLite's backup API (safe while the build writes), plus a SQL dump of it."""
    snapshot, dump = folder / AUDIT_SNAPSHOT, folder / AUDIT_DUMP
    try:
        src = sqlite3.connect(f"{audit_db.resolve().as_uri()}?mode=ro", uri=True)
        dst = sqlite3.connect(snapshot)
        try:
            src.backup(dst)
            with open(dump, "w", encoding="utf-8") as fh:
                for line in dst.iterdump():
                    fh.write(line + "\n")
        finally:
            dst.close()
            src.close()
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"audit DB {audit_db} cannot be read ({exc}): check that it is a SQLite "
                           "database, or move it aside to back up without it") from None
    return snapshot, dump


def plugin_inventory(root: Path, plugins: list[dict]) -> list[dict]:
    """One record per plugin: name, path, manifest and SKILL.md size/hash (None when not written yet)."""
    out = []
    for plugin in sorted(plugins, key=lambda p: str(p["path"])):
        skill = None
        if plugin.get("skill_md"):
            skill_path = root / plugin["skill_md"]
            if skill_path.is_file():
                skill = {"path": PurePosixPath(str(plugin["skill_md"])).as_posix(),
                         "size": skill_path.stat().st_size, "sha256": sha256_file(skill_path)}
        manifest = plugin.get("manifest") or {}
        out.append({
            "name": plugin["name"],
            "path": PurePosixPath(str(plugin["path"])).as_posix(),
            "version": plugin.get("version") or manifest.get("version"),
            "category": plugin.get("category") or manifest.get("category"),
            "manifest": manifest,
            "skill_md": skill,
        })
    return out


def plugins_for_backup(market) -> list[dict]:
    """make_archive's plugin list from a discovered marketplace (`.root`, `.plugins`): every plugin with a folder."""
    root = Path(market.root).resolve()
    out = []
    for p in market.plugins:
        if p.path is None:
            continue
        target = Path(p.target) if p.target is not None else None
        skill = target.resolve().relative_to(root).as_posix() if target and target.is_file() else None
        out.append({"name": p.name, "path": p.rel, "manifest": dict(p.manifest or {}), "skill_md": skill})
    return out


# ---------------------------------------------------------------- making a backup

def _timestamp(out_root: Path) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = stamp, 1
    while (out_root / candidate).exists():
        candidate, n = f"{stamp}-{n}", n + 1
    return candidate


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _remove_stale_temp(out_root: Path) -> None:
    """Temp folders of killed backups (their pid is gone) are removed; a running backup's are kept."""
    for tmp in out_root.glob(f"{TMP_PREFIX}*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _catalog_name(root: Path) -> str:
    data = _read_json(root / CATALOG)
    return str(data.get("name") or root.name) if isinstance(data, dict) else root.name


def make_archive(marketplace: Path, out_root: Path, audit_db: Path | None, plugins: list[dict],
                 tool_version: str) -> ArchiveResult:
    """Write and verify one backup folder; raises ArchiveError with the reason when anything fails."""
    started = time.monotonic()
    root = Path(marketplace).resolve()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp(out_root)
    files, secrets = _select(root, [p["path"] for p in plugins])
    stamp = _timestamp(out_root)
    tmp = out_root / f"{TMP_PREFIX}{stamp}-{os.getpid()}"
    tmp.mkdir()
    try:
        left_out = [p.relative_to(root).as_posix() for p in secrets]
        result = _fill_folder(tmp, stamp, root, files, left_out, audit_db, plugins, tool_version)
        problems = verify_archive(tmp)
        if problems:
            raise ArchiveError("the new archive does not match its manifest: " + "; ".join(problems))
        final = out_root / stamp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ArchiveResult(folder=final, archive=final / result["archive"]["name"],
                         archive_sha256=result["archive"]["sha256"], archive_size=result["archive"]["size"],
                         file_count=result["counts"]["files"], total_bytes=result["counts"]["bytes"],
                         plugin_count=result["counts"]["plugins"],
                         secret_files_left_out=result["secret_files_left_out"],
                         audit_snapshot=final / AUDIT_SNAPSHOT if result["audit_db"] else None,
                         seconds=time.monotonic() - started)


def archive_name(stamp: str) -> str:
    """The tar.gz's name inside the backup folder named `stamp` (also its name in Turso)."""
    return f"plugins-{stamp}.tar.gz"


def files_digest(manifest_files: list[dict]) -> str:
    """One hash of a manifest's file list (path, size, sha256, link), the same whether it is read from
    manifest.json or from Turso's backup_files rows: the local audit DB keeps it as an integrity anchor."""
    lines = sorted(f"{e['path']}\t{e['size']}\t{e['sha256']}\t{e.get('link') or ''}" for e in manifest_files)
    return sha256_bytes("\n".join(lines).encode("utf-8"))


def open_result(folder: Path) -> ArchiveResult:
    """The ArchiveResult of an existing, verified backup folder (an upload that is resumed)."""
    info, _manifest, _inventory = load_backup(folder)
    snapshot = (info.get("audit_db") or {}).get("snapshot")
    return ArchiveResult(folder=folder, archive=folder / info["archive"]["name"],
                         archive_sha256=info["archive"]["sha256"], archive_size=info["archive"]["size"],
                         file_count=info["counts"]["files"], total_bytes=info["counts"]["bytes"],
                         plugin_count=info["counts"]["plugins"],
                         secret_files_left_out=info.get("secret_files_left_out", []),
                         audit_snapshot=folder / snapshot if snapshot else None, seconds=0.0)


def matches_tree(folder: Path, marketplace: Path, plugins: list[dict]) -> bool:
    """True when the backup in `folder` holds exactly the files a new backup of the marketplace would hold."""
    try:
        _info, manifest, _inventory = load_backup(folder)
    except ArchiveError:
        return False
    root = Path(marketplace).resolve()
    files, _secrets = _select(root, [p["path"] for p in plugins])
    current = {f.relative_to(root).as_posix() for f in files}
    return current == {e["path"] for e in manifest["files"]} and not tree_problems(root, manifest["files"])


def _fill_folder(tmp: Path, stamp: str, root: Path, files: list[Path], left_out: list[str], audit_db: Path | None,
                 plugins: list[dict], tool_version: str) -> dict:
    archive = tmp / archive_name(stamp)
    entries = write_tar(root, files, archive)
    digest = sha256_file(archive)
    (tmp / f"{archive.name}.sha256").write_text(f"{digest}  {archive.name}\n", encoding="ascii")
    _write_json(tmp / MANIFEST, {"archive": archive.name, "files": entries})
    _write_json(tmp / INVENTORY, plugin_inventory(root, plugins))
    audit = None
    if audit_db is not None and Path(audit_db).is_file():
        snapshot, dump = snapshot_audit_db(Path(audit_db), tmp)
        audit = {"source": str(audit_db), "snapshot": snapshot.name, "snapshot_sha256": sha256_file(snapshot),
                 "snapshot_size": snapshot.stat().st_size, "dump": dump.name,
                 "dump_sha256": sha256_file(dump), "dump_size": dump.stat().st_size}
    info = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool_version": tool_version,
        "marketplace": {"name": _catalog_name(root), "path": str(root)},
        "archive": {"name": archive.name, "sha256": digest, "size": archive.stat().st_size},
        "manifest_sha256": sha256_file(tmp / MANIFEST),
        "inventory_sha256": sha256_file(tmp / INVENTORY),
        "counts": {"files": len(entries), "plugins": len(plugins),
                   "bytes": sum(e["size"] for e in entries)},
        "audit_db": audit,
        "secret_files_left_out": left_out,
    }
    _write_json(tmp / INFO, info)
    return info


# ---------------------------------------------------------------- checking and reading backups

def member_problems(members: list[tarfile.TarInfo]) -> list[str]:
    """Members that could write outside the destination, or are not plain files/in-tree links."""
    problems = []
    for m in members:
        name = PurePosixPath(m.name)
        if name.is_absolute() or ".." in name.parts or m.name.startswith(("/", "\\")) or not m.name:
            problems.append(f"{m.name!r}: path leaves the destination")
        elif m.issym():
            target = PurePosixPath(m.linkname)
            if target.is_absolute() or _link_escapes(name, target):
                problems.append(f"{m.name!r}: symlink to {m.linkname!r} leaves the destination")
        elif not (m.isfile() or m.isdir()):
            problems.append(f"{m.name!r}: unsupported member type (only files, folders, in-tree links)")
    return problems


def _link_escapes(name: PurePosixPath, target: PurePosixPath) -> bool:
    parts = list(name.parent.parts)
    for part in target.parts:
        if part == "..":
            if not parts:
                return True
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return False


def tar_problems(archive: Path, manifest_files: list[dict]) -> list[str]:
    """Re-open the tar, hash every member, compare with the manifest (paths, sizes, hashes, nothing extra)."""
    expected = {e["path"]: e for e in manifest_files}
    problems, seen = [], set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            problems += member_problems(members)
            for m in members:
                if m.isdir():
                    continue
                seen.add(m.name)
                entry = expected.get(m.name)
                if entry is None:
                    problems.append(f"{m.name}: in the archive but not in the manifest")
                    continue
                if m.issym():
                    if entry.get("link") != m.linkname:
                        problems.append(f"{m.name}: link target differs from the manifest")
                    continue
                digest, size = _sha256_stream(tar.extractfile(m))
                if (digest, size) != (entry["sha256"], entry["size"]):
                    problems.append(f"{m.name}: content differs from the manifest (sha256/size)")
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        return [f"{archive.name}: unreadable archive ({exc})"]
    problems += [f"{path}: listed in the manifest but missing from the archive"
                 for path in sorted(set(expected) - seen)]
    return problems


def verify_archive(folder: Path) -> list[str]:
    """Every problem found in a backup folder; an empty list means it is complete and intact."""
    folder = Path(folder)
    if not (folder / INFO).is_file():
        return [f"{folder}: no {INFO} (interrupted backup)"]
    try:
        info = _read_json(folder / INFO)
        manifest = _read_json(folder / MANIFEST)
    except ArchiveError as exc:
        return [str(exc)]
    archive = folder / info["archive"]["name"]
    if not archive.is_file():
        return [f"{archive}: archive missing"]
    problems = []
    digest = sha256_file(archive)
    if digest != info["archive"]["sha256"]:
        problems.append(f"{archive.name}: sha256 differs from {INFO}")
    sidecar = folder / f"{archive.name}.sha256"
    if not sidecar.is_file() or sidecar.read_text(encoding="ascii").split()[:1] != [digest]:
        problems.append(f"{sidecar.name}: missing or does not match the archive")
    for name, key in ((MANIFEST, "manifest_sha256"), (INVENTORY, "inventory_sha256")):
        if not (folder / name).is_file() or sha256_file(folder / name) != info[key]:
            problems.append(f"{name}: missing or changed since the backup")
    problems += _audit_problems(folder, info.get("audit_db"))
    problems += tar_problems(archive, manifest["files"])
    return problems


def _audit_problems(folder: Path, audit: dict | None) -> list[str]:
    if not audit:
        return []
    problems = []
    for key in ("snapshot", "dump"):
        path = folder / audit[key]
        if not path.is_file() or sha256_file(path) != audit[f"{key}_sha256"]:
            problems.append(f"{audit[key]}: missing or changed since the backup")
    return problems


def load_backup(folder: Path) -> tuple[dict, dict, list[dict]]:
    """(backup-info, manifest, plugin inventory) of a complete backup folder."""
    folder = Path(folder)
    if not (folder / INFO).is_file():
        raise ArchiveError(f"{folder} is not a complete backup (no {INFO}): run `doit backup` again")
    return _read_json(folder / INFO), _read_json(folder / MANIFEST), _read_json(folder / INVENTORY)


def list_local(out_root: Path, verify: bool = False) -> list[LocalBackup]:
    """Backups under out_root, oldest first; `verify` re-hashes each archive against its manifest."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in out_root.iterdir() if p.is_dir()):
        if folder.name.startswith(TMP_PREFIX) or not (folder / INFO).is_file():
            found.append(LocalBackup(folder=folder, state="incomplete"))
            continue
        try:
            info = _read_json(folder / INFO)
        except ArchiveError as exc:
            found.append(LocalBackup(folder=folder, state="incomplete", problems=[str(exc)]))
            continue
        found.append(LocalBackup(folder=folder, state="complete", created=info["created"],
                                 archive_size=info["archive"]["size"], file_count=info["counts"]["files"],
                                 archive_sha256=info["archive"]["sha256"],
                                 problems=verify_archive(folder) if verify else []))
    return found


# ---------------------------------------------------------------- restoring

def extract_verified(archive: Path, manifest_files: list[dict], staging: Path) -> int:
    """Check every member, extract into an empty `staging`, verify each file; returns the file count.

    Raises ArchiveError before writing anything when a member could leave `staging`.
    """
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        listed = {e["path"] for e in manifest_files}
        problems = member_problems(members) + [f"{m.name}: in the archive but not in the manifest"
                                               for m in members if not m.isdir() and m.name not in listed]
        if problems:
            raise ArchiveError("archive refused, nothing extracted: " + "; ".join(problems))
        staging.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(staging, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4; members were checked above
            tar.extractall(staging, members=members)
    problems = tree_problems(staging, manifest_files)
    if problems:
        raise ArchiveError("restored files do not match the manifest: " + "; ".join(problems[:10]))
    return len(manifest_files)


def tree_problems(root: Path, manifest_files: list[dict]) -> list[str]:
    """Compare a folder with manifest entries (extra files elsewhere in `root` are not checked)."""
    problems = []
    for entry in manifest_files:
        path = root / entry["path"]
        if entry.get("link") is not None:
            if not path.is_symlink() or os.readlink(path) != entry["link"]:
                problems.append(f"{entry['path']}: link missing or different")
        elif not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: content differs (sha256/size)")
    return problems


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "ArchiveError", "ArchiveResult", "LocalBackup", "archive_files", "make_archive", "verify_archive",
    "list_local", "load_backup", "plugins_for_backup", "extract_verified", "tree_problems", "member_problems",
    "sha256_file", "sha256_bytes",
]
