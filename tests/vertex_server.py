"""The fake Vertex server for tests: in-process fixtures and a CLI subprocess helper.

Use from a test module (tests/ is on sys.path under pytest's default import mode):

    from vertex_server import fake_vertex, fake_vertex_factory, make_provider, sample_plugin  # noqa: F401

`fake_vertex` is a server with no faults; `fake_vertex_factory(**options)` starts one with FakeVertex
options (faults=["503:first=2"], latency="0.1-0.2", rpm=..., time_scale=..., hang_seconds=...).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from skillbuild.testing.fakevertex import FakeVertex, spawn  # noqa: E402
from skillbuild.providers.base import InputFile, PluginContext  # noqa: E402

TOKEN = "test-token-5f2c9a"  # a recognisable value: tests assert it never leaks into error texts
PROJECT = "skillbuild-test"
LOCATION = "us-central1"


@pytest.fixture
def fake_vertex_factory() -> Iterator[Callable[..., FakeVertex]]:
    servers: list[FakeVertex] = []

    def start(**options: Any) -> FakeVertex:
        options.setdefault("hang_seconds", 10.0)
        server = FakeVertex(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def fake_vertex(fake_vertex_factory: Callable[..., FakeVertex]) -> FakeVertex:
    return fake_vertex_factory()


def make_provider(server: FakeVertex | str, cache_dir: Path | None = None, **options: Any):
    """A VertexProvider on the fake server behind the call path (cache, throttle, retries), with test-sized
    timeouts and backoff. Options name either the provider's or the call path's settings."""
    from skillbuild.calls import Caller, Retry
    from skillbuild.calls.response_cache import ResponseCache
    from skillbuild.providers.vertex import VertexProvider

    url = server if isinstance(server, str) else server.url
    settings = dict(model="gemini-2.5-flash", project=PROJECT, location=LOCATION, endpoint=url, token=TOKEN,
                    request_timeout=2.0, max_attempts=4, retry_max_seconds=20.0, backoff_initial=0.05,
                    backoff_max=0.5, cache_dir=cache_dir, throttle=None)
    settings.update(options)
    retry = Retry(settings.pop("max_attempts"), settings.pop("retry_max_seconds"), settings.pop("backoff_initial"),
                  settings.pop("backoff_max"))
    cache_dir, throttle = settings.pop("cache_dir"), settings.pop("throttle")
    cache = ResponseCache(cache_dir) if cache_dir else None
    return Caller(VertexProvider(**settings), cache=cache, throttle=throttle, retry=retry)


def sample_plugin(name: str = "release-notes-helper") -> PluginContext:
    """A small plugin with commands, an agent, hooks and an MCP server (no corpus needed)."""
    manifest = {"name": name, "version": "1.2.0",
                "description": "Drafts release notes from merged pull requests and checks the changelog format.",
                "keywords": ["release", "changelog", "notes"]}
    files = (
        InputFile(".claude-plugin/plugin.json", json.dumps(manifest)),
        InputFile("README.md", "# Release notes helper\n\nDrafts notes.\n\n## Installation\n\nInstall it.\n\n"
                               "## Usage\n\nRun the command.\n\n## Configuration\n\nSet the repo.\n"),
        InputFile("commands/draft-notes.md", "---\ndescription: Draft release notes from merged PRs\n---\n"
                                             "Collect merged pull requests and draft notes.\n"),
        InputFile("commands/check-changelog.md", "---\ndescription: Check CHANGELOG.md format\n---\nCheck it.\n"),
        InputFile("agents/notes-editor.md", "---\nname: notes-editor\ndescription: Edits notes for tone and "
                                            "clarity\n---\nYou edit release notes.\n"),
        InputFile("hooks/hooks.json", json.dumps({"hooks": {"PostToolUse": [], "SessionStart": []}})),
        InputFile(".mcp.json", json.dumps({"mcpServers": {"github": {"command": "gh-mcp"}}})),
    )
    return PluginContext(name=name, skill_name=name, manifest=manifest, files=files,
                         scripts=("collect_prs.py",), commands=("check-changelog", "draft-notes"),
                         agents=("notes-editor",))


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


def start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    """`python -m skillbuild.fakevertex --port 0 ARGS` as a subprocess; returns (process, base url)."""
    return spawn(*args)
