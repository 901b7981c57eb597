"""The `skillbuild-lint` pre-commit hook: `pre-commit try-repo` on a fixture repository, and the lint itself."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from install_helpers import commit_all, source_copy
from skillbuild import hook

GOOD = "---\nname: good-skill\ndescription: Checks release notes when the user asks for it.\n---\n# Good skill\n\nUse it.\n"
BAD = ("---\nname: other-name\ndescription: TODO fill in\n---\n# Bad skill\n\n## Empty\n\n## Usage\n"
       "See [the guide](missing.md). Key AKIAIOSFODNN7EXAMPLE\n")


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory) -> Path:
    """This checkout as the hook repository: try-repo reads .pre-commit-hooks.yaml from a commit."""
    return source_copy(tmp_path_factory.mktemp("hook-repo"))


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")  # the hook's environment is built once per module


def _fixture_repo(folder: Path, skills: dict[str, str]) -> Path:
    commit_all(folder, "empty")
    for rel, text in skills.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    subprocess.run(["git", "-C", str(folder), "add", "-A"], check=True)  # staged, not committed
    return folder


def _try_repo(repo: Path, hook_repo: Path, home: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("PYTHONPATH", None)  # the hook runs from the environment pre-commit installs, not this checkout
    return subprocess.run([str(Path(bin_dir) / "pre-commit"), "try-repo", str(hook_repo), "skillbuild-lint"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)


def test_try_repo_fails_the_bad_staged_skill_and_passes_the_good_one(tmp_path, hook_repo, pre_commit_home):
    repo = _fixture_repo(tmp_path / "repo", {"good/skills/good-skill/SKILL.md": GOOD,
                                             "bad/skills/wrong/SKILL.md": BAD, "notes/README.md": "TODO\n"})
    proc = _try_repo(repo, hook_repo, pre_commit_home)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for reason in ("Directory name 'wrong' must match skill name 'other-name'", "placeholder text present: TODO",
                   "empty sections", "missing.md", "AWS access key id"):
        assert "bad/skills/wrong/SKILL.md: " in out and reason in out, reason
    assert "good-skill/SKILL.md" not in out and "README.md" not in out and "AKIAIOSFODNN7EXAMPLE" not in out


def test_try_repo_passes_when_only_good_skills_are_staged(tmp_path, hook_repo, pre_commit_home):
    repo = _fixture_repo(tmp_path / "repo", {"good/skills/good-skill/SKILL.md": GOOD})
    proc = _try_repo(repo, hook_repo, pre_commit_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Passed" in proc.stdout


def test_lint_keeps_to_the_size_budget_and_not_to_the_build_gates(tmp_path, capsys):
    skill = tmp_path / "skills" / "good-skill" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    # Names a slash command and a host no plugin file vouches for: build gates, not a maintainer's lint.
    skill.write_text(GOOD + "Run /other:thing, fetch https://example.net/x.\n")
    assert hook.main([str(skill)]) == 0
    assert hook.main(["--max-bytes", "50", str(skill)]) == 1
    assert "size is" in capsys.readouterr().out
