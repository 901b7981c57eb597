"""Backup figures on a real marketplace: archive size, backup time, upload time, restore time (RTO).

Usage: .venv/bin/python bench/backup_figures.py CORPUS_PATH [--chunk-size BYTES]

Works on a copy of the corpus in a temp folder, uploads to a local sqld (the same server the tests use,
loopback only), restores from it alone into a new folder and checks that tree byte for byte against the copy.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "rules")]

from skillbuild import __version__  # noqa: E402
from skillbuild.safety import archive, offsite  # noqa: E402
from skillbuild.discovery import discover  # noqa: E402
from skillbuild.testing.sqld import SqldServer, find_sqld  # noqa: E402


def copy_corpus(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=True)
    for dirpath, _dirs, _files in os.walk(dest):  # the shared corpus is read-only; the copy must not be
        os.chmod(dirpath, 0o755)


def differing(restored: Path, original: Path, files: list[Path]) -> list[str]:
    """Archived files whose restored bytes differ from the source copy (links compare by target)."""
    bad = []
    for path in files:
        rel = path.relative_to(original)
        twin = restored / rel
        if path.is_symlink():
            same = twin.is_symlink() and os.readlink(twin) == os.readlink(path)
        else:
            same = twin.is_file() and filecmp.cmp(twin, path, shallow=False)
        if not same:
            bad.append(rel.as_posix())
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--chunk-size", type=int, default=offsite.DEFAULT_CHUNK_SIZE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backup-figures-") as tmp:
        work = Path(tmp)
        market = (work / "market").resolve()
        copy_corpus(args.corpus, market)
        (work / "sqld").mkdir()
        server = SqldServer(find_sqld(), work / "sqld").start()
        try:
            plugins = archive.plugins_for_backup(discover(market))
            files = archive.archive_files(market, [p["path"] for p in plugins])
            t0 = time.monotonic()
            made = archive.make_archive(market, work / "archive", None, plugins, __version__)
            backup_s = time.monotonic() - t0
            up = offsite.upload(made.folder, server.url, server.token, args.chunk_size)
            shutil.rmtree(made.folder)  # restore from the off-site copy alone
            dest = work / "restored"
            got = offsite.restore(server.url, server.token, up.backup_id, dest)
            mismatched = differing(dest, market, files)
        finally:
            server.stop()
    print(f"corpus:          {args.corpus} ({len(plugins)} plugins with a folder)")
    print(f"files archived:  {made.file_count} ({made.total_bytes:,} bytes), "
          f"{len(made.secret_files_left_out)} secret-looking files left out")
    print(f"archive size:    {made.archive_size:,} bytes ({made.archive_size / 2**20:.2f} MiB)")
    print(f"backup time:     {backup_s:.2f} s (tar.gz + manifest + verify)")
    print(f"upload time:     {up.seconds:.2f} s ({up.chunks_total} chunks of {up.chunk_size:,} bytes, loopback sqld)")
    print(f"restore (RTO):   {got.seconds:.2f} s (download {got.download_seconds:.2f} s, extract + verify rest)")
    print(f"restored tree:   {got.file_count} files verified against the manifest; "
          f"{'byte-identical to the source' if not mismatched else f'{len(mismatched)} files DIFFER'}")
    return 0 if not mismatched else 1


if __name__ == "__main__":
    sys.exit(main())
