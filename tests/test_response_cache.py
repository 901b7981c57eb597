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
