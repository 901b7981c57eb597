"""The response cache: stable keys, durable entries, and no torn entry after SIGKILL mid-write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skillbuild.calls.response_cache import ResponseCache  # noqa: E402

BASE = dict(model="gemini-2.5-flash", prompt="analyse", inputs="plugin data", config={"temperature": 0.2})


def test_key_is_stable_and_ignores_dict_order():
    a = ResponseCache.key("m", "p", {"x": 1, "y": [1, 2]}, {"t": 0.2, "n": 5})
    b = ResponseCache.key("m", "p", {"y": [1, 2], "x": 1}, {"n": 5, "t": 0.2})
    assert a == b and len(a) == 64 and int(a, 16) >= 0


@pytest.mark.parametrize("field, other", [("model", "gemini-2.5-pro"), ("prompt", "analyse v2"),
                                          ("inputs", "plugin data edited"), ("config", {"temperature": 0.3})])
def test_key_changes_with_each_part(field, other):
    changed = dict(BASE, **{field: other})
    assert ResponseCache.key(**changed) != ResponseCache.key(**BASE)


def test_put_get_roundtrip_survives_a_new_instance(tmp_path):
    key = ResponseCache.key(**BASE)
    assert ResponseCache(tmp_path).get(key) is None
    path = ResponseCache(tmp_path).put(key, {"value": "text ü", "tokens": 3})
    assert path.is_file() and path.parent.parent == tmp_path
    again = ResponseCache(tmp_path)
    assert again.get(key) == {"value": "text ü", "tokens": 3}
    assert key in again and again.count() == 1
    assert not list(tmp_path.rglob("*.tmp")), "the temp file must be renamed away"


def test_unreadable_or_foreign_entry_is_a_miss(tmp_path):
    cache = ResponseCache(tmp_path)
    key = ResponseCache.key(**BASE)
    cache.put(key, {"value": 1})
    cache.path(key).write_text('{"format": 1, "key": "', encoding="utf-8")  # torn by hand
    assert cache.get(key) is None
    other = ResponseCache.key(**dict(BASE, prompt="other"))
    cache.path(key).write_text(json.dumps({"format": 1, "key": other, "value": {"v": 1}}), encoding="utf-8")
    assert cache.get(key) is None, "an entry stored under the wrong key must not be served"


def test_bad_keys_and_values_are_refused(tmp_path):
    cache = ResponseCache(tmp_path)
    with pytest.raises(ValueError, match="64 hex"):
        cache.get("../../etc/passwd")
    with pytest.raises(TypeError):
        cache.put(ResponseCache.key(**BASE), "not a dict")  # type: ignore[arg-type]


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from skillbuild.calls.response_cache import ResponseCache
    cache = ResponseCache(sys.argv[1])
    keys = [ResponseCache.key("m", "p", str(i), {}) for i in range(8)]
    print("ready", flush=True)
    n = 0
    while True:  # rewrite the same keys with large values until killed
        n += 1
        cache.put(keys[n % 8], {"n": n, "blob": "x" * 400_000, "end": "complete"})
""")


def test_sigkill_mid_write_never_leaves_a_torn_entry(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    store = tmp_path / "store"
    for delay in (0.15, 0.3, 0.45):
        proc = subprocess.Popen([sys.executable, str(script), str(store), str(ROOT)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        cache = ResponseCache(store)
        keys = [ResponseCache.key("m", "p", str(i), {}) for i in range(8)]
        present = [cache.get(k) for k in keys if cache.path(k).exists()]
        assert present, "the writer should have finished some entries before the kill"
        for value in present:
            assert value is not None and value["end"] == "complete" and len(value["blob"]) == 400_000


def test_an_answer_the_cache_cannot_take_is_spilled_and_found_again_then_moved_back(tmp_path):
    """A real failing write (the cache folder's parent is a file): the answer goes to the spill folder, a later
    lookup finds it there, and once the cache can take it again it moves back."""
    from skillbuild.calls.response_cache import CacheFull

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    key = ResponseCache.key(**BASE)
    cache = ResponseCache(blocker / "responses", spill=tmp_path / "spill")
    with pytest.raises(CacheFull) as caught:
        cache.put(key, {"value": "paid answer"})
    assert f"cannot write {blocker / 'responses'}" in str(caught.value) and "a rerun uses it" in str(caught.value)
    assert caught.value.kept == tmp_path / "spill" / key[:2] / f"{key}.json" and caught.value.kept.is_file()
    assert ResponseCache(blocker / "responses", spill=tmp_path / "spill").get(key) == {"value": "paid answer"}
    blocker.unlink()  # room again
    again = ResponseCache(blocker / "responses", spill=tmp_path / "spill")
    assert again.get(key) == {"value": "paid answer"}
    assert again.path(key).is_file() and not caught.value.kept.exists()


FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from skillbuild.calls.response_cache import CacheFull, ResponseCache
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
root = Path(sys.argv[1])
key = ResponseCache.key("m", "p", "i", "c")
try:
    ResponseCache(root / "responses", spill=root / "spill").put(key, {"value": "paid answer"})
except CacheFull as exc:
    print("kept:", exc.kept)
print("memory:", ResponseCache(root / "responses", spill=root / "spill").get(key))
"""


def test_when_no_file_can_take_an_answer_it_stays_in_memory_for_the_run(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "rules")}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["kept: None", "memory: {'value': 'paid answer'}"]
