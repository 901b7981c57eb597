"""pytest fixtures for a real sqld on loopback (the launcher is skillbuild.testing.sqld)."""
from __future__ import annotations

from pathlib import Path

import pytest

from skillbuild.testing.sqld import SqldNotFound, SqldServer, find_sqld


@pytest.fixture(scope="session")
def sqld_binary() -> Path:
    try:
        return find_sqld()
    except SqldNotFound as exc:
        problem = str(exc)
    pytest.fail(f"the off-site tests need a real sqld and none was found: {problem}", pytrace=False)


@pytest.fixture
def sqld(sqld_binary, tmp_path_factory):
    """A fresh sqld per test (starting takes ~0.05 s), stopped at teardown."""
    server = SqldServer(sqld_binary, tmp_path_factory.mktemp("sqld")).start()
    try:
        yield server
    finally:
        server.stop()
