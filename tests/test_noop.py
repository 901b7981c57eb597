"""A no-op run: no SDK, no connection, and the memo kept between runs never answers for a changed file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from skillbuild import build
from skillbuild.discovery import SNIFF_BYTES, discover
from skillbuild.fingerprints import files_hash
from skillbuild import memo as memo_module
from skillbuild.memo import Memo
from skillbuild.ui import status
from tests.conftest import ROOT, copy_examples

# Runs doit like `python -m doit`, with every socket connection refused and recorded; at exit it writes the
# modules loaded and the connections tried to the file named by argv[1].
WRAPPER = """
import atexit, json, runpy, socket, sys
out, tried = sys.argv[1], []
def refuse(self, address, *a, **k):
    tried.append(repr(address))
    raise OSError("no connection in a no-op")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
atexit.register(lambda: open(out, "w").write(json.dumps({"modules": sorted(sys.modules), "connections": tried})))
sys.argv = ["doit"] + sys.argv[2:]
runpy.run_module("doit", run_name="__main__")
"""
NOT_IN_A_NOOP = ("google", "httpx", "grpc", "requests", "aiohttp", "bm25s", "libsql_client",
                 "skillbuild.providers.vertex", "skillbuild.testing")


def test_offline_noop_imports_no_sdk_and_connects_nowhere(doit, doit_env, tmp_path):
    first = doit()
    assert first.returncode == 0, first.stdout + first.stderr
    record = tmp_path / "noop.json"
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(record), "-f", str(ROOT / "dodo.py")],
                          env=doit_env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doit.executed(proc) == set(), proc.stdout
    seen = json.loads(record.read_text())
    loaded = [m for m in seen["modules"] if any(m == bad or m.startswith(bad + ".") for bad in NOT_IN_A_NOOP)]
    assert loaded == []
    assert seen["connections"] == []


@pytest.fixture
def mk(tmp_path):
    return copy_examples(tmp_path / "m")


def inputs_of(root, key="deploy-checker", memo=None, **kw):
    plugin = next(p for p in discover(root, memo=memo, **kw).plugins if p.key == key)
    return plugin, [plugin.relpath(p) for p in plugin.inputs]


def next_run(path) -> Memo:
    """The memo as the next run reads it from disk (each run is a new process)."""
    return Memo(path)


COMMANDS = "plugins/devops/deploy-checker/commands"


def _add(root):
    (root / COMMANDS / "new.md").write_text("# new\n")


def _remove(root):
    (root / COMMANDS / "rollback-plan.md").unlink()


def _rename(root):
    (root / COMMANDS / "rollback-plan.md").rename(root / COMMANDS / "plan-rollback.md")


def _grow(root):
    path = root / COMMANDS / "rollback-plan.md"
    path.write_text(path.read_text() + "x" * 5000)


def _binary(root):
    path = root / COMMANDS / "rollback-plan.md"
    path.write_bytes(path.read_bytes() + b"\x00\x01")


@pytest.mark.parametrize("change, gone, new", [
    (_add, None, "commands/new.md"),
    (_remove, "commands/rollback-plan.md", None),
    (_rename, "commands/rollback-plan.md", "commands/plan-rollback.md"),
    (_grow, "commands/rollback-plan.md", None),  # past file_max_bytes below
    (_binary, "commands/rollback-plan.md", None),
])
def test_every_load_sees_the_inputs_as_they_are_now(mk, tmp_path, change, gone, new):
    """The memo kept between runs serves an unchanged plugin without walking it, and never a changed one:
    the next run after a change lists the inputs anew, and the input hash (kept by stat key) follows."""
    saved = tmp_path / "memo.json"
    first = next_run(saved)
    before, names = inputs_of(mk, memo=first, file_max_bytes=4000)
    hashed = build.source_hash(before)
    first.save()
    unchanged = next_run(saved)
    assert inputs_of(mk, memo=unchanged, file_max_bytes=4000)[1] == names
    assert not unchanged.dirty  # served from the memo: nothing was computed again
    change(mk)
    later = next_run(saved)
    after, names_after = inputs_of(mk, memo=later, file_max_bytes=4000)
    assert later.dirty  # the changed plugin was walked again
    assert names_after == inputs_of(mk, file_max_bytes=4000)[1]  # what a load without any memo finds
    if gone:
        assert gone in names and gone not in names_after
    if new:
        assert new in names_after and new not in names
    assert build.source_hash(after) != hashed


def test_the_memo_is_only_a_cache(mk, tmp_path):
    """An unreadable memo file is an empty one, and a memo that cannot be written costs nothing but time."""
    saved = tmp_path / "memo.json"
    saved.write_text("{not json")
    memo = next_run(saved)
    assert inputs_of(mk, memo=memo)[1] == inputs_of(mk)[1] and memo.dirty
    saved.unlink()
    saved.mkdir()  # a folder where the file goes: the write fails quietly
    memo.save()
    assert memo.dirty and saved.is_dir()


def test_a_memo_of_other_code_is_not_read_and_gone_folders_leave_it(mk, tmp_path):
    """Other code could find other inputs in the same files (an upgrade): its memo is dropped. A plugin folder
    that is gone takes its entries with it when the memo is next written."""
    saved = tmp_path / "memo.json"
    memo = next_run(saved)
    inputs_of(mk, memo=memo)
    memo.save()
    data = json.loads(saved.read_text())
    assert next_run(saved).kinds["inputs"]
    saved.write_text(json.dumps({**data, "format": [data["format"][0], "0" * 16]}))
    assert next_run(saved).kinds == {}

    memo = next_run(saved)
    inputs_of(mk, memo=memo)
    gone = mk / "plugins/devops/deploy-checker"
    assert any(base == str(gone) for base, _, _ in memo.kinds["inputs"].values())
    shutil.rmtree(gone)
    memo.dirty = True  # something else changed, so the memo is written
    memo.save()
    assert not any(base == str(gone) for base, _, _ in next_run(saved).kinds["inputs"].values())


def test_a_skill_folder_found_clean_is_listed_again_once_changed(mk, tmp_path):
    """The run start's sweep stats a skill folder it found without temp files; a temp file left there since
    (a killed write) changes the folder and is found."""
    from skillbuild.store import writing

    folder = mk / "plugins/devops/deploy-checker"
    saved = tmp_path / "memo.json"
    memo = next_run(saved)
    assert writing.temps_in([folder], memo) == []
    memo.save()
    left = folder / f"{writing.TEMP_PREFIX}killed.tmp"
    left.write_text("half")
    assert writing.temps_in([folder], next_run(saved)) == [left]


@pytest.fixture
def active_memo(tmp_path):
    """Run-by-run memos for `files_hash` and `read_target` (they ask the process's active one): `next()` reads
    the memo file anew, as the next run does, and makes it the active one."""
    saved = tmp_path / "active-memo.json"
    was = memo_module.activate(Memo(saved))

    def next_one() -> Memo:
        memo_module.active().save()
        loaded = Memo(saved)
        memo_module.activate(loaded)
        return loaded

    yield next_one
    memo_module.activate(was)


def test_input_hash_follows_a_same_size_edit_with_the_old_mtime_put_back(mk, active_memo):
    """Size and mtime can both come out the same after an edit (a tool that keeps mtimes); ctime cannot."""
    plugin, _ = inputs_of(mk, memo=active_memo())
    readme = mk / "plugins/devops/deploy-checker/README.md"
    first = files_hash(plugin.inputs, plugin.path)
    memo = active_memo()
    assert files_hash(plugin.inputs, plugin.path) == first and not memo.dirty  # the next run: served, not read
    before = readme.stat()
    data = readme.read_bytes()
    readme.write_bytes(bytes([data[0] ^ 0x20]) + data[1:])  # same size, different bytes
    os.utime(readme, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (readme.stat().st_size, readme.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    plugin, _ = inputs_of(mk, memo=active_memo())
    assert files_hash(plugin.inputs, plugin.path) != first


def test_binary_sniff_reads_one_block(mk):
    folder = mk / COMMANDS
    late = "# fine\n" + "a" * SNIFF_BYTES
    (folder / "late.md").write_bytes(late.encode() + b"\xff\xfe")  # bad bytes only after the first block
    cut = "a" * (SNIFF_BYTES - 1) + "é" + "b" * 10  # a two-byte character cut by the block's end
    (folder / "cut.md").write_text(cut, encoding="utf-8")
    (folder / "nul.md").write_bytes(b"# x\n\x00")
    (folder / "bad.md").write_bytes(b"# x\n\xff")
    plugin, names = inputs_of(mk, file_max_bytes=100_000)
    assert "commands/late.md" in names and "commands/cut.md" in names
    excluded = dict(plugin.excluded)
    assert excluded["commands/nul.md"] == excluded["commands/bad.md"] == "binary or not UTF-8 text"


def test_keep_decision_rereads_a_replaced_skill(mk):
    """`read_target` remembers a SKILL.md by stat: a file written over it (as a build does) is read again."""
    plugin, _ = inputs_of(mk)
    plugin.target.parent.mkdir(parents=True, exist_ok=True)
    plugin.target.write_text("---\nname: deploy-checker\ndescription: by hand\n---\n" + "hand written\n" * 400)
    assert status.is_kept(plugin, 1000, "vertex")
    replacement = plugin.target.with_name("new.md")
    replacement.write_text("---\nname: deploy-checker\ndescription: short\n---\nshort\n")
    os.replace(replacement, plugin.target)
    assert not status.is_kept(plugin, 1000, "vertex")
    plugin.target.unlink()
    assert status.read_target(plugin.target) is None


def test_a_plain_run_judges_each_plugin_once_as_it_loads(doit, market):
    """A plain `doit` asks no analysis task of a fresh plugin (doit's json report lists every task it saw);
    a changed plugin gets its analysis and rebuild, and `-a` still rebuilds every plugin."""
    assert doit().returncode == 0

    def seen(*args):
        proc = doit("-r", "json", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return {t["name"]: t["result"] for t in json.loads(proc.stdout)["tasks"]}

    tasks = seen()
    assert not [n for n in tasks if n.startswith("analyse:")]
    assert tasks["skill:deploy-checker"] == "up-to-date"
    readme = market / "plugins/devops/deploy-checker/README.md"
    readme.write_text(readme.read_text() + "\nOne more line about rollbacks.\n")
    tasks = seen()
    assert (tasks["analyse:deploy-checker"], tasks["skill:deploy-checker"]) == ("success", "success")
    assert [n for n in tasks if n.startswith("analyse:")] == ["analyse:deploy-checker"]
    rebuilt = seen("-a")
    assert rebuilt["skill:deploy-checker"] == "success" and rebuilt["analyse:deploy-checker"] == "success"
