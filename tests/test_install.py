"""Acceptance: `pip install <clone>` (not editable) into a fresh venv, then the installed `skillbuild` command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DoitRun, copy_examples
from install_helpers import clean_env, skillbuild, source_copy
from sqld_server import sqld, sqld_binary  # noqa: F401  (pytest fixtures)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with this checkout installed the way a maintainer installs it (pip's cache makes it quick)."""
    base = tmp_path_factory.mktemp("install")
    clone = source_copy(base / "clone")
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    pip = subprocess.run([str(base / "venv" / "bin" / "pip"), "install", "-q", str(clone)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return base / "venv"


def _site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def _run(venv: Path, *args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    env = clean_env(**extra)
    env.pop("PYTHONPATH", None)  # the installed package only, never this checkout's
    return skillbuild(*args, cwd=cwd, env=env, command=[str(venv / "bin" / "skillbuild")])


def test_installed_package_holds_skillbuild_its_data_and_no_rules(venv):
    site = _site_packages(venv)
    assert (site / "skillbuild" / "cli.py").is_file() and not (site / "rules").exists()
    assert (site / "skillbuild" / "skill" / "prompts" / "generation.md").is_file()
    assert list((site / "skillbuild" / "skill" / "schemas").glob("*.json"))
    assert (venv / "bin" / "skillbuild-lint").is_file()


def test_installed_command_builds_a_copy_of_examples_then_does_nothing(venv, tmp_path):
    market = copy_examples(tmp_path / "market")
    first = _run(venv, cwd=market / "plugins")
    assert first.returncode == 0, first.stdout + first.stderr
    assert {"skill:deploy-checker", "skill:secret-sentry", "skill:changelog-lint"} <= DoitRun.executed(first)
    second = _run(venv, cwd=market)
    assert second.returncode == 0 and DoitRun.executed(second) == set(), second.stdout
    listed = _run(venv, "list", "--all", "--status", cwd=market)
    marks = {p[1]: p[0] for p in (line.split() for line in listed.stdout.splitlines()) if p}
    per_plugin = {name: mark for name, mark in marks.items() if name.startswith(("skill:", "analyse:"))}
    assert len(per_plugin) >= 6 and set(per_plugin.values()) == {"U"}, per_plugin
    state = market / ".skillbuild"
    assert (state / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (state / "cache").is_dir() and (state / "build").is_dir()
    assert not (Path(os.getcwd()) / ".skillbuild").exists()
    assert _run(venv, "--version", cwd=market).stdout.startswith("skillbuild ")


def test_installed_backup_and_restore_offsite_against_sqld(venv, tmp_path, sqld):  # noqa: F811
    market = copy_examples(tmp_path / "market")
    turso = {"TURSO_DATABASE_URL": sqld.url, "TURSO_AUTH_TOKEN": sqld.token}
    assert _run(venv, cwd=market).returncode == 0
    backed = _run(venv, "-n", "1", "backup", cwd=market, **turso)
    assert backed.returncode == 0, backed.stdout + backed.stderr
    dest = tmp_path / "restored"
    restored = _run(venv, "restore_offsite", f"dest={dest}", cwd=market, **turso)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    skill = Path("plugins/devops/deploy-checker/skills/deploy-checker/SKILL.md")
    assert (dest / skill).read_bytes() == (market / skill).read_bytes()
    assert not (dest / ".skillbuild").exists()  # the state folder is never archived
