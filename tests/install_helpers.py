"""Helpers for the installed-mode tests: the `skillbuild` command in a subprocess, a copy of the source tree."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without skillbuild, Google Cloud or Turso settings, so only the marketplace's own count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_", "TURSO_"))}
    env.update({"SKILLBUILD_PROVIDER": "offline", "PYTHONUNBUFFERED": "1", **extra})
    return env


def skillbuild(*args: str, cwd: Path, env: dict[str, str] | None = None, command: list[str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`skillbuild ARGS` in `cwd`: the checkout's package (PYTHONPATH=rules) unless `command` names an installed one."""
    if command is None:
        command = [sys.executable, "-m", "skillbuild.cli"]
        env = {**(env or clean_env()), "PYTHONPATH": str(ROOT / "rules")}
    return subprocess.run([*command, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def source_copy(dest: Path) -> Path:
    """The checkout's source as a commit would hold it (tracked and new files, none ignored), as a git repo with
    one commit: what `pip install <clone>` and `pre-commit try-repo` read, without touching the checkout."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out, follow_symlinks=False)
    commit_all(dest)
    return dest


def commit_all(repo: Path, message: str = "snapshot") -> None:
    repo.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    if not (repo / ".git").exists():
        subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)
