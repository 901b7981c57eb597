"""Shared fixtures: a temp copy of examples/ and a way to run the real doit on it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NOT_MARKETPLACE = "examples/ci/"  # the CI recipe sits beside the sample marketplace, not in it
EVENT = re.compile(r"^\d\d:\d\d:\d\d \[\d+/\d+\] (\S+) (analyse|generate|repair|keep|skip|restore) (\S+)", re.M)


class DoitRun:
    """Runs `doit` on dodo.py in a subprocess with settings pointed at temp folders."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def __call__(self, *args: str, timeout: float = 300, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args]
        return subprocess.run(cmd, env={**self.env, **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    @staticmethod
    def executed(proc: subprocess.CompletedProcess) -> set[str]:
        """Tasks that ran: doit's '.  name' lines, and the run's event lines for per-plugin tasks
        ('10:15:03 [3/5] my-plugin generate success ...'; analyse events belong to analyse:<p>)."""
        ran = {line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")}
        for match in EVENT.finditer(proc.stdout):
            plugin, phase = match.group(1), match.group(2)
            ran.add(f"{'analyse' if phase == 'analyse' else 'skill'}:{plugin}")
        return ran

    def list_status(self) -> dict[str, str]:
        proc = self("list", "--status")
        assert proc.returncode == 0, proc.stderr
        return {parts[1]: parts[0] for parts in (line.split() for line in proc.stdout.splitlines()) if parts}


def copy_examples(dest: Path) -> Path:
    """A pristine copy of examples/: its tracked files only, never what a build (the README's first command) wrote
    there. Outside a git checkout, every file is copied except SKILL.md files that carry our provenance."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--", "examples"], capture_output=True)
    tracked = [name for name in listed.stdout.decode().split("\0")
               if name and not name.startswith(NOT_MARKETPLACE)] if listed.returncode == 0 else []
    if not tracked:
        shutil.copytree(EXAMPLES, dest, symlinks=True, ignore=_generated_skills)
        shutil.rmtree(dest / Path(NOT_MARKETPLACE).relative_to("examples"), ignore_errors=True)
        return dest
    for name in tracked:
        src, out = ROOT / name, dest / Path(name).relative_to("examples")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)
    return dest


def _generated_skills(folder: str, names: list[str]) -> list[str]:
    from skillbuild.skill import skillmd

    return [n for n in names if n == "SKILL.md"
            and skillmd.provenance((Path(folder) / n).read_text(encoding="utf-8", errors="replace"))]


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return copy_examples(tmp_path / "market")


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    dest = tmp_path / "prompts"
    shutil.copytree(ROOT / "rules" / "skillbuild" / "skill" / "prompts", dest)
    return dest


@pytest.fixture
def doit_env(tmp_path: Path, market: Path, prompts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_", "TURSO_"))}
    env.update({
        "SKILLBUILD_MARKETPLACE": str(market),
        "SKILLBUILD_PROVIDER": "offline",
        "SKILLBUILD_CACHE_ROOT": str(tmp_path / "cache"),
        "SKILLBUILD_BUILD_ROOT": str(tmp_path / "build"),
        "SKILLBUILD_PROMPTS_DIR": str(prompts),
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def doit(doit_env: dict[str, str]) -> DoitRun:
    return DoitRun(doit_env)
