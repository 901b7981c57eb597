"""The off-site copy of a backup in Turso (libSQL, remote mode): upload, list, verify, restore.

The archive itself is stored, in chunks of at most 4 MiB (a libSQL server refuses rows over 5,000,000 bytes),
so a restore needs nothing but the Turso database. Every statement is parameterized and auto-committed
(the server expires an idle transaction after ~5 s); chunks are inserted idempotently so an interrupted
upload resumes where it stopped, and a backup is marked `complete` only after its last chunk.
The auth token is never put in a message: every error text is scrubbed of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from skillbuild.safety import archive
from skillbuild.safety.journal import Journal, Unjournalled

DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 4 << 20
URL_VAR = "TURSO_DATABASE_URL"
TOKEN_VAR = "TURSO_AUTH_TOKEN"
_URL_SCHEMES = ("libsql", "https", "http", "wss", "ws")
_ROWS_PER_INSERT = 200  # metadata rows per statement: few round trips, small requests

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS backup_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created TEXT NOT NULL,
        marketplace TEXT NOT NULL,
        archive_name TEXT NOT NULL,
        archive_sha256 TEXT NOT NULL,
        archive_size INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        file_count INTEGER NOT NULL,
        tool_version TEXT,
        state TEXT NOT NULL CHECK (state IN ('uploading', 'complete')),
        completed TEXT,
        UNIQUE (archive_name, archive_sha256))""",
    """CREATE TABLE IF NOT EXISTS plugin_metadata (
        backup_id INTEGER NOT NULL REFERENCES backup_history(id),
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        version TEXT,
        category TEXT,
        skill_md_size INTEGER,
        skill_md_sha256 TEXT,
        PRIMARY KEY (backup_id, path))""",
    """CREATE TABLE IF NOT EXISTS backup_files (
        backup_id INTEGER NOT NULL REFERENCES backup_history(id),
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        link TEXT,
        PRIMARY KEY (backup_id, path))""",
    """CREATE TABLE IF NOT EXISTS archive_chunks (
        backup_id INTEGER NOT NULL REFERENCES backup_history(id),
        seq INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (backup_id, seq))""",
)


class OffsiteError(Exception):
    """The off-site step failed; the message says why and never contains the auth token."""


class OffsiteAuthError(OffsiteError):
    """Turso refused the token."""


@dataclass(frozen=True)
class UploadResult:
    state: str  # "skipped" | "complete" | "already-complete"
    message: str = ""
    backup_id: int | None = None
    chunks_total: int = 0
    chunks_uploaded: int = 0
    chunks_skipped: int = 0
    chunk_size: int = 0
    archive_size: int = 0
    seconds: float = 0.0
    abandoned: list[int] = field(default_factory=list)  # interrupted uploads of older archives, removed

    def lines(self) -> list[str]:
        if self.state == "skipped":
            return [self.message]
        out = [f"off-site backup {self.backup_id} {self.state}: {self.archive_size:,} bytes in "
               f"{self.chunks_total} chunks of {self.chunk_size:,} ({self.chunks_uploaded} uploaded, "
               f"{self.chunks_skipped} already there) in {self.seconds:.2f} s"]
        if self.abandoned:
            out.append(f"removed {len(self.abandoned)} interrupted off-site upload(s) of older archives: "
                       + ", ".join(f"#{i}" for i in self.abandoned))
        return out


@dataclass(frozen=True)
class RestoreResult:
    backup_id: int
    archive_name: str
    dest: Path
    file_count: int
    archive_size: int
    download_seconds: float
    seconds: float
    anchor: str = ""  # what the archive was checked against besides Turso itself

    def lines(self) -> list[str]:
        return [f"restored off-site backup {self.backup_id} ({self.archive_name}, {self.archive_size:,} bytes) "
                f"into {self.dest}",
                f"  {self.file_count} files verified against the manifest; download {self.download_seconds:.2f} s, "
                f"total {self.seconds:.2f} s",
                f"  {self.anchor}"]


@dataclass(frozen=True)
class OffsiteBackup:
    id: int
    created: str
    marketplace: str
    archive_name: str
    archive_sha256: str
    archive_size: int
    chunk_count: int
    chunks_present: int
    state: str
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        extra = "" if not self.problems else "  PROBLEMS: " + "; ".join(self.problems)
        return (f"#{self.id}  {self.created}  {self.marketplace}  {self.archive_name}  {self.archive_size:,} bytes  "
                f"{self.chunks_present}/{self.chunk_count} chunks  {self.state}{extra}")


@dataclass(frozen=True)
class OffsiteListing:
    state: str  # "skipped" | "ok"
    message: str = ""
    backups: list[OffsiteBackup] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.state == "skipped":
            return [self.message]
        return [b.line() for b in self.backups] or ["no off-site backups yet"]


# ---------------------------------------------------------------- connection and error text

def skipped_message(url_var: str = URL_VAR, token_var: str = TOKEN_VAR) -> str:
    return f"off-site copy skipped: set {url_var} and {token_var} to upload backups to Turso"


def _scrub(text: str, token: str | None, url: str = "") -> str:
    if url and url != _safe_url(url):
        text = text.replace(url, _safe_url(url))
    if token:
        text = text.replace(token, "***")
        for part in token.split("."):  # pieces of a JWT are secrets too
            if len(part) >= 8:
                text = text.replace(part, "***")
    return text


def _safe_url(url: str) -> str:
    """scheme://host[:port] only: a URL may carry `?authToken=` or user info."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


class _Remote:
    """One libsql connection that turns every failure into a scrubbed OffsiteError."""

    def __init__(self, url: str, token: str, token_var: str = TOKEN_VAR, url_var: str = URL_VAR):
        self.url, self._token, self.token_var = url, token, token_var
        if urlsplit(url).scheme not in _URL_SCHEMES:
            raise OffsiteError(f"Turso URL {_safe_url(url)!r} is not a libsql://, https:// or http:// URL: "
                               f"fix {url_var}")
        import libsql  # imported here so a local-only backup never needs the client

        self._conn = self._guard("connecting", lambda: libsql.connect(url, auth_token=token,
                                                                        isolation_level=None))

    def _guard(self, what: str, call: Callable):
        try:
            return call()
        except Exception as exc:  # libsql raises ValueError/RuntimeError with the server's text
            raise self._translate(what, str(exc)) from None

    def _translate(self, what: str, text: str) -> OffsiteError:
        if "status=401" in text or "Unauthorized" in text:
            return OffsiteAuthError(f"Turso rejected the auth token (HTTP 401): check {self.token_var}")
        if "status=403" in text or "Forbidden" in text:
            return OffsiteAuthError(f"Turso refused access (HTTP 403): the token in {self.token_var} "
                                    "needs read-write rights on this database")
        if "error trying to connect" in text or "Connection refused" in text or "dns error" in text:
            return OffsiteError(f"cannot reach Turso at {_safe_url(self.url)} while {what}: "
                                "check the URL and the network, then rerun (uploads resume)")
        return OffsiteError(f"Turso error while {what}: {_scrub(text, self._token, self.url)}")

    def run(self, what: str, sql: str, params: tuple | list = ()) -> list[tuple]:
        return self._guard(what, lambda: self._conn.execute(sql, tuple(params)).fetchall())

    def ensure_schema(self) -> None:
        for statement in SCHEMA:
            self.run("creating tables", statement)

    def has_schema(self) -> bool:
        """Reads only, so listing and restoring work with a read-only token."""
        rows = self.run("reading the schema", "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                        "('backup_history', 'plugin_metadata', 'backup_files', 'archive_chunks')")
        return rows[0][0] == 4


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- upload

def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise OffsiteError(f"chunk size {chunk_size!r} must be a positive number of bytes")
    if chunk_size > MAX_CHUNK_SIZE:
        raise OffsiteError(f"chunk size {chunk_size:,} bytes is over the {MAX_CHUNK_SIZE:,}-byte cap "
                           "(a libSQL server refuses rows over 5,000,000 bytes): use 4 MiB or less")
    return chunk_size


def upload(archive_folder: Path, url: str | None, token: str | None, chunk_size: int = DEFAULT_CHUNK_SIZE,
           *, on_chunk: Callable[[int], None] | None = None, url_var: str = URL_VAR,
           token_var: str = TOKEN_VAR) -> UploadResult:
    """Copy a verified local backup folder to Turso; resumes an interrupted upload of the same archive.

    `on_chunk(seq)` runs after each chunk is committed (progress output; tests use it to interrupt).
    """
    check_chunk_size(chunk_size)
    if not url or not token:
        return UploadResult(state="skipped", message=skipped_message(url_var, token_var))
    started = time.monotonic()
    folder = Path(archive_folder)
    info, manifest, inventory = _load_verified(folder)
    remote = _Remote(url, token, token_var, url_var)
    remote.ensure_schema()
    backup_id, state, chunk_size = _backup_row(remote, info, manifest, chunk_size)
    total = -(-info["archive"]["size"] // chunk_size)
    if state == "complete":
        return UploadResult(state="already-complete", backup_id=backup_id, chunks_total=total,
                            chunks_skipped=total, chunk_size=chunk_size, archive_size=info["archive"]["size"],
                            seconds=time.monotonic() - started)
    _insert_rows(remote, "plugin_metadata", ("backup_id", "name", "path", "version", "category",
                                             "skill_md_size", "skill_md_sha256"),
                 [_plugin_row(backup_id, p) for p in inventory])
    _insert_rows(remote, "backup_files", ("backup_id", "path", "size", "sha256", "link"),
                 [(backup_id, f["path"], f["size"], f["sha256"], f.get("link")) for f in manifest["files"]])
    uploaded, skipped = _upload_chunks(remote, backup_id, folder / info["archive"]["name"], chunk_size, on_chunk)
    _mark_complete(remote, backup_id, total)
    abandoned = _drop_abandoned(remote, info["marketplace"]["name"], backup_id)
    return UploadResult(state="complete", backup_id=backup_id, chunks_total=total, chunks_uploaded=uploaded,
                        chunks_skipped=skipped, chunk_size=chunk_size, archive_size=info["archive"]["size"],
                        seconds=time.monotonic() - started, abandoned=abandoned)


def _load_verified(folder: Path) -> tuple[dict, dict, list[dict]]:
    try:
        info, manifest, inventory = archive.load_backup(folder)
    except archive.ArchiveError as exc:
        raise OffsiteError(str(exc)) from None
    archive_path = folder / info["archive"]["name"]
    if not archive_path.is_file() or archive.sha256_file(archive_path) != info["archive"]["sha256"]:
        raise OffsiteError(f"{archive_path} is missing or does not match backup-info.json: "
                           "make a new backup with `doit backup` before uploading")
    return info, manifest, inventory


def _backup_row(remote: _Remote, info: dict, manifest: dict, chunk_size: int) -> tuple[int, str, int]:
    """The history row for this archive (created if new); a resumed upload keeps its first chunk size."""
    size = info["archive"]["size"]
    remote.run("recording the backup",
               "INSERT OR IGNORE INTO backup_history (created, marketplace, archive_name, archive_sha256, "
               "archive_size, chunk_count, chunk_size, file_count, tool_version, state) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'uploading')",
               (info["created"], info["marketplace"]["name"], info["archive"]["name"], info["archive"]["sha256"],
                size, -(-size // chunk_size), chunk_size, len(manifest["files"]), info.get("tool_version")))
    rows = remote.run("reading the backup", "SELECT id, state, chunk_size FROM backup_history "
                      "WHERE archive_name = ? AND archive_sha256 = ?",
                      (info["archive"]["name"], info["archive"]["sha256"]))
    backup_id, state, stored_size = rows[0]
    return int(backup_id), str(state), check_chunk_size(int(stored_size))


def _plugin_row(backup_id: int, plugin: dict) -> tuple:
    skill = plugin.get("skill_md") or {}
    version, category = plugin.get("version"), plugin.get("category")
    return (backup_id, plugin["name"], plugin["path"], None if version is None else str(version),
            None if category is None else str(category), skill.get("size"), skill.get("sha256"))


def _insert_rows(remote: _Remote, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Multi-row INSERT OR IGNORE, a few hundred rows per auto-committed statement."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        batch = rows[start:start + _ROWS_PER_INSERT]
        sql = (f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES "
               + ", ".join([one] * len(batch)))
        remote.run(f"recording {table}", sql, [value for row in batch for value in row])


def _upload_chunks(remote: _Remote, backup_id: int, archive_path: Path, chunk_size: int,
                   on_chunk: Callable[[int], None] | None) -> tuple[int, int]:
    present = dict(remote.run("listing uploaded chunks",
                              "SELECT seq, sha256 FROM archive_chunks WHERE backup_id = ?", (backup_id,)))
    uploaded = skipped = 0
    with open(archive_path, "rb") as fh:
        seq = 0
        while data := fh.read(chunk_size):
            digest = hashlib.sha256(data).hexdigest()
            if present.get(seq) == digest:
                skipped += 1
            else:
                # REPLACE heals a chunk stored with the wrong bytes by an earlier, broken attempt.
                remote.run(f"uploading chunk {seq}",
                           "INSERT OR REPLACE INTO archive_chunks (backup_id, seq, sha256, size, bytes) "
                           "VALUES (?, ?, ?, ?, ?)", (backup_id, seq, digest, len(data), data))
                uploaded += 1
                if on_chunk is not None:
                    on_chunk(seq)
            seq += 1
    return uploaded, skipped


def _mark_complete(remote: _Remote, backup_id: int, total: int) -> None:
    count = remote.run("counting chunks", "SELECT count(*) FROM archive_chunks WHERE backup_id = ?",
                       (backup_id,))[0][0]
    if count != total:
        raise OffsiteError(f"off-site backup {backup_id} holds {count} chunks, expected {total}: rerun to resume")
    remote.run("marking the backup complete",
               "UPDATE backup_history SET state = 'complete', completed = ? WHERE id = ?", (_now(), backup_id))


def _drop_abandoned(remote: _Remote, marketplace: str, newest: int) -> list[int]:
    """Interrupted uploads of this marketplace older than a completed one can never complete: remove them (their
    local archives stay on this machine), so no backup is left `uploading` forever."""
    ids = [int(r[0]) for r in remote.run("finding interrupted uploads", "SELECT id FROM backup_history WHERE "
                                         "marketplace = ? AND state = 'uploading' AND id < ?", (marketplace, newest))]
    for backup_id in ids:
        for table in ("archive_chunks", "backup_files", "plugin_metadata"):
            remote.run(f"removing interrupted upload {backup_id}", f"DELETE FROM {table} WHERE backup_id = ?",
                       (backup_id,))
        remote.run(f"removing interrupted upload {backup_id}", "DELETE FROM backup_history WHERE id = ?",
                   (backup_id,))
    return ids


# ---------------------------------------------------------------- listing and verifying

def list_offsite(url: str | None, token: str | None, verify: bool = False, *, url_var: str = URL_VAR,
                 token_var: str = TOKEN_VAR) -> OffsiteListing:
    """Off-site backups, oldest first; `verify` downloads every chunk and re-checks its hash."""
    if not url or not token:
        return OffsiteListing(state="skipped", message=skipped_message(url_var, token_var))
    remote = _Remote(url, token, token_var, url_var)
    if not remote.has_schema():
        return OffsiteListing(state="ok")
    rows = remote.run("listing backups",
                      "SELECT h.id, h.created, h.marketplace, h.archive_name, h.archive_sha256, h.archive_size, "
                      "h.chunk_count, (SELECT count(*) FROM archive_chunks c WHERE c.backup_id = h.id), h.state "
                      "FROM backup_history h ORDER BY h.id")
    backups = []
    for row in rows:
        problems = _verify_remote(remote, int(row[0]), int(row[6]), row[4]) if verify else []
        if verify and row[8] != "complete":
            problems.insert(0, "upload interrupted: rerun `doit backup` to resume it")
        backups.append(OffsiteBackup(*row, problems=problems))
    return OffsiteListing(state="ok", backups=backups)


def _verify_remote(remote: _Remote, backup_id: int, chunk_count: int, archive_sha256: str) -> list[str]:
    whole = hashlib.sha256()
    try:
        for seq in range(chunk_count):
            whole.update(_fetch_chunk(remote, backup_id, seq))
    except OffsiteError as exc:
        return [str(exc)]
    return [] if whole.hexdigest() == archive_sha256 else ["the archive's sha256 differs from the history"]


def _fetch_chunk(remote: _Remote, backup_id: int, seq: int) -> bytes:
    """One SELECT per chunk keeps every response far below the server's response limit."""
    rows = remote.run(f"downloading chunk {seq}",
                      "SELECT sha256, size, bytes FROM archive_chunks WHERE backup_id = ? AND seq = ?",
                      (backup_id, seq))
    if not rows:
        raise OffsiteError(f"off-site backup {backup_id} is missing chunk {seq}: restore another backup "
                           "or upload this one again")
    digest, size, data = rows[0]
    data = bytes(data)
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise OffsiteError(f"chunk {seq} of off-site backup {backup_id} is corrupted (sha256 mismatch): "
                           "nothing was extracted; restore another backup")
    return data


# ---------------------------------------------------------------- restore

def restore(url: str | None, token: str | None, backup_id: int | None, dest: Path, allow_live: bool = False,
            live_root: Path | None = None, *, marketplace: str | None = None, url_var: str = URL_VAR,
            token_var: str = TOKEN_VAR, anchors: dict[str, tuple[str, str]] | None = None,
            journal: Journal | None = None) -> RestoreResult:
    """Rebuild the marketplace files of an off-site backup into `dest`.

    Without `backup_id`, the latest complete backup (of `marketplace`, the catalog name, when given).

    `dest` must be new or empty; extracting over `live_root` needs `allow_live`. Chunks, the whole archive and
    every extracted file are verified; on any mismatch nothing is written to `dest`. `anchors` (archive name ->
    (archive sha256, files digest), from the local audit DB) catch a forgery that rewrote Turso consistently.
    """
    if not url or not token:
        raise OffsiteError(f"restore needs the off-site database: set {url_var} and {token_var}")
    started = time.monotonic()
    dest = Path(dest).resolve()
    live = _check_dest(dest, live_root, allow_live)
    remote = _Remote(url, token, token_var, url_var)
    if not remote.has_schema():
        raise OffsiteError(f"the off-site database at {_safe_url(url)} holds no backups yet: "
                           "run `doit backup` with Turso configured")
    row = _pick_backup(remote, backup_id, marketplace)
    backup_id, archive_name, archive_sha256, archive_size, chunk_count = row
    manifest = [{"path": p, "size": s, "sha256": h, **({"link": link} if link is not None else {})}
                for p, s, h, link in remote.run("reading the file list", "SELECT path, size, sha256, link "
                                                "FROM backup_files WHERE backup_id = ? ORDER BY path",
                                                (backup_id,))]
    anchor = _check_anchor(anchors, backup_id, archive_name, archive_sha256, manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.restore-{os.getpid()}"
    journal = journal or Unjournalled()
    with journal.staging(work):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        tar_path = work / archive_name
        _download(remote, backup_id, chunk_count, archive_sha256, tar_path)
        downloaded = time.monotonic() - started
        staging = work / "tree"
        try:
            count = archive.extract_verified(tar_path, manifest, staging)
        except archive.ArchiveError as exc:
            raise OffsiteError(f"off-site backup {backup_id}: {exc}") from None
        _place(staging, dest, manifest, live)
        shutil.rmtree(work, ignore_errors=True)
    return RestoreResult(backup_id=backup_id, archive_name=archive_name, dest=dest, file_count=count,
                         archive_size=archive_size, download_seconds=downloaded,
                         seconds=time.monotonic() - started, anchor=anchor)


def _check_anchor(anchors: dict[str, tuple[str, str]] | None, backup_id: int, archive_name: str,
                  archive_sha256: str, manifest: list[dict]) -> str:
    """Compare Turso's record with the hashes this machine kept when it made the backup."""
    known = (anchors or {}).get(archive_name)
    if known is None:
        return ("no local record of this backup (audit DB): trusting Turso alone for the archive's and the "
                "manifest's hashes")
    sha, digest = known
    if sha != archive_sha256 or digest != archive.files_digest(manifest):
        raise OffsiteError(f"off-site backup {backup_id} ({archive_name}) does not match the hashes the local audit "
                           "DB recorded when it was made: the off-site copy was changed; nothing was extracted")
    return "archive and manifest hashes match the local audit DB's record of this backup"


def _check_dest(dest: Path, live_root: Path | None, allow_live: bool) -> bool:
    """True when restoring over the live marketplace (allowed explicitly); else dest must be new or empty."""
    if live_root is not None:
        live = Path(live_root).resolve()
        if dest == live and allow_live:
            return True
        if dest == live or live in dest.parents or dest in live.parents:
            raise OffsiteError(f"{dest} overlaps the live marketplace {live}: restore into a new folder "
                               "(dest=DIR), or ask explicitly to overwrite the live marketplace root")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OffsiteError(f"{dest} exists and is not empty: choose a new folder with dest=DIR")
    return False


def _pick_backup(remote: _Remote, backup_id: int | None, marketplace: str | None) -> tuple:
    columns = "id, archive_name, archive_sha256, archive_size, chunk_count, state"
    if backup_id is None:
        rows = remote.run("choosing the backup", f"SELECT {columns} FROM backup_history WHERE state = 'complete' "
                          "AND (? IS NULL OR marketplace = ?) ORDER BY id DESC LIMIT 1", (marketplace, marketplace))
        if not rows:
            raise OffsiteError("no complete off-site backup to restore"
                               + (f" for marketplace {marketplace!r}" if marketplace else "")
                               + ": run `doit backup` with Turso configured")
    else:
        rows = remote.run("choosing the backup", f"SELECT {columns} FROM backup_history WHERE id = ?",
                          (int(backup_id),))
        if not rows:
            raise OffsiteError(f"off-site backup {backup_id} does not exist: `doit backups` lists them")
        if rows[0][5] != "complete":
            raise OffsiteError(f"off-site backup {backup_id} is incomplete (its upload was interrupted): "
                               "rerun `doit backup` to resume it, or restore another backup")
    return tuple(rows[0][:5])


def _download(remote: _Remote, backup_id: int, chunk_count: int, archive_sha256: str, target: Path) -> None:
    whole = hashlib.sha256()
    with open(target, "wb") as fh:
        for seq in range(chunk_count):
            data = _fetch_chunk(remote, backup_id, seq)
            whole.update(data)
            fh.write(data)
    if whole.hexdigest() != archive_sha256:
        raise OffsiteError(f"off-site backup {backup_id}: the reassembled archive's sha256 differs from the "
                           "history: nothing was extracted; restore another backup")


def _place(staging: Path, dest: Path, manifest: list[dict], live: bool) -> None:
    """Move the verified tree into place: a rename for a new folder, file by file over the live tree."""
    if not live:
        if dest.exists():
            dest.rmdir()  # checked empty above
        os.rename(staging, dest)
        return
    for entry in manifest:
        target = dest / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or (target.exists() and entry.get("link") is not None):
            target.unlink()
        os.replace(staging / entry["path"], target)
