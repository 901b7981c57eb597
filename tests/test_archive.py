"""The local backup: contents, determinism, audit snapshot, verification and safe extraction."""

from __future__ import annotations

import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from skillbuild.safety import archive
from skillbuild.safety.archive import ArchiveError, archive_files, extract_verified, list_local, make_archive, verify_archive

BLOB_SIZE = 300_000


def make_marketplace(root: Path) -> list[dict]:
    """A small marketplace with the awkward cases (binary, exec bit, links, .git, temp files); returns plugins."""
    files = {
        ".claude-plugin/marketplace.json": json.dumps({"name": "fixture-market", "plugins": [
            {"name": "alpha", "source": "./plugins/alpha", "version": "1.2.0", "category": "tools"},
            {"name": "beta", "source": "./plugins/beta", "category": "docs"}]}),
        "plugins/alpha/.claude-plugin/plugin.json": json.dumps({"name": "alpha", "version": "1.2.0"}),
        "plugins/alpha/skills/alpha/SKILL.md": "---\nname: alpha\ndescription: Alpha things.\n---\n# Alpha\n",
        "plugins/alpha/scripts/run.sh": "#!/bin/sh\necho alpha\n",
        "plugins/alpha/.git/config": "[core]\n",
        "plugins/beta/README.md": "# Beta\n\nÜnïcödé text.\n",
        "plugins/beta/commands/b.md": "Run beta.\n",
        "plugins/beta/notes.tmp": "half-written\n",
        "plugins/beta/.env": "BETA_TOKEN=do-not-upload\n",
        "plugins/beta/draft.md~": "editor backup\n",
        "not-a-plugin/secret.txt": "outside every plugin folder\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "plugins/alpha/scripts/run.sh").chmod(0o755)
    blob = root / "plugins/alpha/assets/blob.bin"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(random.Random(7).randbytes(BLOB_SIZE))  # incompressible: the archive spans many chunks
    (root / "plugins/beta/inner-link.md").symlink_to("README.md")
    (root / "plugins/beta/outside-link").symlink_to(root.parent / "elsewhere.txt")
    (root.parent / "elsewhere.txt").write_text("not part of the marketplace\n")
    return [
        {"name": "alpha", "path": "plugins/alpha", "manifest": {"name": "alpha", "version": "1.2.0",
                                                                "category": "tools"},
         "skill_md": "plugins/alpha/skills/alpha/SKILL.md"},
        {"name": "beta", "path": "plugins/beta", "manifest": {"name": "beta", "category": "docs"}, "skill_md": None},
    ]


EXPECTED = {
    ".claude-plugin/marketplace.json", "plugins/alpha/.claude-plugin/plugin.json",
    "plugins/alpha/skills/alpha/SKILL.md", "plugins/alpha/scripts/run.sh", "plugins/alpha/assets/blob.bin",
    "plugins/beta/README.md", "plugins/beta/commands/b.md", "plugins/beta/inner-link.md",
}


def tree(root: Path) -> dict[str, tuple]:
    """Every file and link under root: content (or link target) and exec bit."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            else:
                out[rel] = ("file", path.read_bytes(), os.access(path, os.X_OK))
    return out


def make_audit_db(path: Path) -> sqlite3.Connection:
    """An audit DB in WAL mode with committed rows; returns an open connection for more writes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, plugin TEXT)")
    conn.executemany("INSERT INTO runs (plugin) VALUES (?)", [("alpha",), ("beta",)])
    return conn


@pytest.fixture
def market(tmp_path):
    root = tmp_path / "market"
    plugins = make_marketplace(root)
    return root, plugins


def test_archive_holds_exactly_the_marketplace_files_with_relative_paths(market, tmp_path):
    root, plugins = market
    result = make_archive(root, tmp_path / "out", None, plugins, "9.9.9")
    with tarfile.open(result.archive) as tar:
        names = [m.name for m in tar.getmembers()]
    assert set(names) == EXPECTED
    assert names == sorted(names, key=lambda n: n)  # deterministic order
    listed = {p.relative_to(root.resolve()).as_posix() for p in archive_files(root, [p["path"] for p in plugins])}
    assert listed == EXPECTED
    assert result.file_count == len(EXPECTED) and result.plugin_count == 2
    assert result.folder.name in result.archive.name and result.archive.name.startswith("plugins-")
    assert verify_archive(result.folder) == []


def test_sidecars_manifest_inventory_and_info(market, tmp_path):
    root, plugins = market
    result = make_archive(root, tmp_path / "out", None, plugins, "9.9.9")
    folder = result.folder
    digest, name = (folder / f"{result.archive.name}.sha256").read_text().split()
    assert (digest, name) == (archive.sha256_file(result.archive), result.archive.name)
    manifest = json.loads((folder / "manifest.json").read_text())
    blob = next(e for e in manifest["files"] if e["path"] == "plugins/alpha/assets/blob.bin")
    assert blob["size"] == BLOB_SIZE
    assert blob["sha256"] == archive.sha256_file(root / "plugins/alpha/assets/blob.bin")
    inventory = {p["name"]: p for p in json.loads((folder / "plugin-inventory.json").read_text())}
    skill = root / "plugins/alpha/skills/alpha/SKILL.md"
    assert inventory["alpha"]["skill_md"] == {"path": "plugins/alpha/skills/alpha/SKILL.md",
                                              "size": skill.stat().st_size, "sha256": archive.sha256_file(skill)}
    assert inventory["alpha"]["version"] == "1.2.0" and inventory["beta"]["skill_md"] is None
    info = json.loads((folder / "backup-info.json").read_text())
    assert info["tool_version"] == "9.9.9" and info["marketplace"]["name"] == "fixture-market"
    assert info["counts"] == {"files": len(EXPECTED), "plugins": 2, "bytes": sum(e["size"] for e in manifest["files"])}
    assert info["archive"]["size"] == result.archive.stat().st_size and info["audit_db"] is None
    assert info["secret_files_left_out"] == ["plugins/beta/.env"]
    assert any("plugins/beta/.env" in line for line in result.lines())


def test_same_tree_gives_the_same_archive_bytes(market, tmp_path):
    root, plugins = market
    first = make_archive(root, tmp_path / "out", None, plugins, "1")
    second = make_archive(root, tmp_path / "out", None, plugins, "1")
    assert first.folder != second.folder
    assert first.archive_sha256 == second.archive_sha256


def test_audit_snapshot_is_consistent_while_a_writer_holds_a_transaction(market, tmp_path):
    root, plugins = market
    db = tmp_path / "audit.db"
    writer = make_audit_db(db)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO runs (plugin) VALUES ('uncommitted')")
    try:
        result = make_archive(root, tmp_path / "out", db, plugins, "1")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    snap = sqlite3.connect(result.audit_snapshot)
    assert snap.execute("SELECT plugin FROM runs ORDER BY id").fetchall() == [("alpha",), ("beta",)]
    assert snap.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    snap.close()
    dump = (result.folder / "audit.sql").read_text()
    assert "CREATE TABLE runs" in dump and "'beta'" in dump and "uncommitted" not in dump
    info = json.loads((result.folder / "backup-info.json").read_text())
    assert info["audit_db"]["snapshot_sha256"] == archive.sha256_file(result.audit_snapshot)


def test_verify_archive_finds_tampering(market, tmp_path):
    root, plugins = market
    result = make_archive(root, tmp_path / "out", None, plugins, "1")
    manifest_path = result.folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    problems = verify_archive(result.folder)
    assert any("manifest.json" in p for p in problems)
    assert any(manifest["files"][0]["path"] in p and "differs" in p for p in problems)
    data = bytearray(result.archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.archive.write_bytes(bytes(data))
    assert any("sha256 differs" in p for p in verify_archive(result.folder))


def test_failed_backup_leaves_no_folder(market, tmp_path):
    root, plugins = market
    bad_db = tmp_path / "audit.db"
    bad_db.write_bytes(b"this is not sqlite" * 100)
    out = tmp_path / "out"
    with pytest.raises(ArchiveError, match="audit.db"):
        make_archive(root, out, bad_db, plugins, "1")
    assert list(out.iterdir()) == []


def test_killed_backup_is_never_listed_as_complete(market, tmp_path):
    """A backup process killed mid-way leaves only a dot-named temp folder, cleaned by the next backup."""
    root, plugins = market
    out = tmp_path / "out"
    script = (
        "import sys, os, signal, json\n"
        "from pathlib import Path\n"
        "from skillbuild.safety import archive\n"
        "real = archive.write_tar\n"
        "def dying(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "archive.write_tar = dying\n"
        "archive.make_archive(Path(sys.argv[1]), Path(sys.argv[2]), None, json.loads(sys.argv[3]), '1')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(root), str(out), json.dumps(plugins)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = list(out.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert [b.state for b in list_local(out)] == ["incomplete"]
    make_archive(root, out, None, plugins, "1")
    assert [b.state for b in list_local(out)] == ["complete"]
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir())


def test_list_local_with_verify(market, tmp_path):
    root, plugins = market
    out = tmp_path / "out"
    good = make_archive(root, out, None, plugins, "1")
    bad = make_archive(root, out, None, plugins, "1")
    (bad.folder / "plugin-inventory.json").write_text("[]")
    listed = {b.folder.name: b for b in list_local(out, verify=True)}
    assert listed[good.folder.name].problems == []
    assert listed[bad.folder.name].problems and "plugin-inventory.json" in listed[bad.folder.name].line()


def test_plugin_path_outside_marketplace_is_refused(market, tmp_path):
    root, plugins = market
    with pytest.raises(ArchiveError, match="not inside the marketplace"):
        make_archive(root, tmp_path / "out", None, plugins + [{"name": "x", "path": "../elsewhere"}], "1")
    with pytest.raises(ArchiveError, match="does not exist"):
        archive_files(root, ["plugins/gamma"])


def _evil_tar(path: Path, name: str, linkname: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if linkname is not None:
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            tar.addfile(info)
        else:
            info.size = 5
            tar.addfile(info, io.BytesIO(b"owned"))


@pytest.mark.parametrize("name,link", [("../evil.txt", None), ("/tmp/skillbuild-evil.txt", None),
                                       ("plugins/../../evil.txt", None), ("plugins/ok-link", "../../../etc")])
def test_path_traversal_members_are_refused_and_nothing_is_written(tmp_path, name, link):
    evil = tmp_path / "evil.tar.gz"
    _evil_tar(evil, name, link)
    staging = tmp_path / "deep" / "staging"
    with pytest.raises(ArchiveError, match="leaves the destination"):
        extract_verified(evil, [{"path": name, "size": 5, "sha256": archive.sha256_bytes(b"owned")}], staging)
    assert not staging.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not Path("/tmp/skillbuild-evil.txt").exists()


def test_plugins_for_backup_from_real_discovery(market):
    from skillbuild.discovery import discover

    root, plugins = market
    found = archive.plugins_for_backup(discover(root))
    assert [(p["name"], p["path"], p["skill_md"]) for p in found] == \
        [(p["name"], p["path"], p["skill_md"]) for p in plugins]
    assert found[0]["manifest"]["version"] == "1.2.0"
