import os

from skillbuild.fingerprints import XXHashChecker, file_xxh3


def stat_after(path, mtime):
    os.utime(path, (mtime, mtime))
    return os.stat(path)


def test_touch_is_not_a_change_but_an_edit_is(tmp_path):
    path = tmp_path / "f.md"
    path.write_text("hello world")
    checker = XXHashChecker()
    state = checker.get_state(str(path), None)
    assert state[2] == file_xxh3(path)
    assert checker.check_modified(str(path), os.stat(path), state) is False
    assert checker.check_modified(str(path), stat_after(path, state[0] + 10), state) is False  # touch
    path.write_text("hello WORLD")  # same size, new content
    assert checker.check_modified(str(path), stat_after(path, state[0] + 20), state) is True
    path.write_text("hello world, longer")
    assert checker.check_modified(str(path), stat_after(path, state[0] + 30), state) is True


def test_state_is_reused_when_mtime_is_unchanged(tmp_path):
    path = tmp_path / "f.md"
    path.write_text("x")
    checker = XXHashChecker()
    state = checker.get_state(str(path), None)
    assert checker.get_state(str(path), state) is None
