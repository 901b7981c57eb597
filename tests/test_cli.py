"""The installed-mode `skillbuild` command, run from the checkout's package: root finding, settings, state."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import DoitRun
from install_helpers import clean_env, commit_all, skillbuild
from vertex_server import fake_vertex_factory  # noqa: F401  (fixture)
from skillbuild import __version__, tasks
from skillbuild.config import load_settings
from skillbuild.discovery import discover
from skillbuild.safety import archive, backup
from skillbuild.statedir import MARKER


def _status(proc: subprocess.CompletedProcess) -> dict[str, str]:
    return {parts[1]: parts[0] for parts in (line.split() for line in proc.stdout.splitlines()) if parts}


def test_version_names_skillbuild_and_doit(tmp_path):
    proc = skillbuild("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"skillbuild {__version__} (doit 0.37")


def test_run_in_a_subfolder_builds_the_marketplace_and_git_status_stays_clean(market):
    commit_all(market)
    first = skillbuild(cwd=market / "plugins" / "devops")
    assert first.returncode == 0, first.stderr
    assert {"skill:deploy-checker", "skill:secret-sentry", "skill:changelog-lint"} <= DoitRun.executed(first)
    assert (market / ".skillbuild" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (market / ".skillbuild" / "cache").is_dir() and (market / ".skillbuild" / "build").is_dir()
    changed = subprocess.run(["git", "-C", str(market), "status", "--porcelain", "--untracked-files=all"],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    paths = [line[3:] for line in changed if line]
    written = [p for p in paths if p.endswith("SKILL.md")]
    assert written and all(p.endswith("SKILL.md") or "/references/" in p for p in paths), paths  # only skills
    second = skillbuild(cwd=market)
    assert second.returncode == 0 and DoitRun.executed(second) == set()
    listed = _status(skillbuild("list", "--all", "--status", cwd=market / "plugins"))
    per_plugin = {name: mark for name, mark in listed.items() if name.startswith(("skill:", "analyse:"))}
    assert per_plugin and set(per_plugin.values()) == {"U"}, per_plugin


def test_outside_a_marketplace_it_says_how_to_point_at_one(tmp_path):
    proc = skillbuild("status", cwd=tmp_path)
    assert proc.returncode == 3
    assert "no marketplace here" in proc.stderr and "skillbuild marketplace=PATH" in proc.stderr
    assert not (tmp_path / ".skillbuild").exists()


def test_marketplace_setting_wins_and_is_relative_to_where_it_runs(market, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = skillbuild("status", "marketplace=../market", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "deploy-checker" in proc.stdout
    assert (market / ".skillbuild" / MARKER).is_file() and not (elsewhere / ".skillbuild").exists()
    deeper = elsewhere / "deeper"
    deeper.mkdir()
    by_env = skillbuild("check", cwd=deeper, env=clean_env(SKILLBUILD_MARKETPLACE="../../market"))
    assert by_env.returncode == 0, by_env.stderr
    assert f"marketplace: {market.resolve()}  [environment]" in by_env.stdout


def test_marketplace_settings_files_layer_and_check_names_each_source(market):
    (market / "pyproject.toml").write_text("[tool.skillbuild]\nkeep_min_bytes = 9000\nmax_bytes = 15000\n")
    (market / ".skillbuild.toml").write_text('keep_min_bytes = 9001\nstate_dir = "state"\n')
    proc = skillbuild("check", "max_body_lines=400", cwd=market)
    assert proc.returncode == 0, proc.stderr
    assert f"keep_min_bytes: 9001  [{market / '.skillbuild.toml'}]" in proc.stdout
    assert f"max_bytes: 15000  [{market / 'pyproject.toml'} [tool.skillbuild]]" in proc.stdout
    assert "max_body_lines: 400  [command line]" in proc.stdout
    assert f"state: {market / 'state' / 'cache'} and {market / 'state' / 'build'}" in proc.stdout
    assert (market / "state" / ".gitignore").is_file() and not (market / ".skillbuild").exists()


def test_a_bad_marketplace_setting_is_exit_3(market):
    (market / ".skillbuild.toml").write_text("no_such_setting = 1\n")
    proc = skillbuild("status", cwd=market)
    assert proc.returncode == 3 and "unknown setting 'no_such_setting'" in proc.stderr


def test_the_checkout_layout_is_unchanged_without_home(tmp_path):
    settings = load_settings(env={})
    root = settings.project_root
    assert settings.cache_dir.parent == root / "cache" and settings.build_root == root / "build"
    assert settings.state_dir is None and settings.values["state_dir"] is None


def _root_plugin_marketplace(folder: Path) -> Path:
    """A marketplace that is itself its only plugin: the plugin folder holds the state folder."""
    (folder / ".claude-plugin").mkdir(parents=True)
    (folder / ".claude-plugin" / "marketplace.json").write_text(json.dumps(
        {"name": "solo", "owner": {"name": "t"}, "plugins": [{"name": "solo", "source": "./"}]}))
    (folder / ".claude-plugin" / "plugin.json").write_text(json.dumps(
        {"name": "solo", "description": "Formats release notes for the solo project."}))
    (folder / "README.md").write_text("# Solo\n\nFormats release notes. Run /solo:notes to write them.\n")
    (folder / "commands").mkdir()
    (folder / "commands" / "notes.md").write_text("---\ndescription: Write release notes\n---\nWrite notes.\n")
    return folder


def test_the_state_folder_is_never_an_input_backed_up_or_archived(tmp_path):
    root = _root_plugin_marketplace(tmp_path / "solo")
    first = skillbuild(cwd=root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "skill:solo" in DoitRun.executed(first)
    state = root / ".skillbuild"
    (state / "cache" / "tool.py").write_text("print('state, not a plugin script')\n")
    (state / "cache" / "commands").mkdir()
    (state / "cache" / "commands" / "ghost.md").write_text("# not a command\n")
    plugin = discover(root).plugins[0]
    walked = [plugin.relpath(p) for p in plugin.inputs] + plugin.scripts + [rel for rel, _ in plugin.excluded]
    assert not [rel for rel in walked if rel.startswith(".skillbuild")], walked
    files, links, dirs = backup._scan(root)
    assert not [rel for rel in [*files, *links, *dirs] if rel.startswith(".skillbuild")]
    archived = archive.archive_files(root, ["./"])
    assert archived and not [p for p in archived if state in p.parents]
    again = skillbuild(cwd=root)  # a state file that changed is no input that changed
    assert again.returncode == 0 and DoitRun.executed(again) == set(), again.stdout
    backed_up = skillbuild("-n", "1", "backup", cwd=root, env=clean_env())
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr


def test_the_readme_section_installs_with_pipx_and_names_real_tasks():
    import re

    from conftest import ROOT
    from test_readme import section

    text = section("## Use it in your marketplace")
    assert "pipx install" in text and "examples/ci/skillbuild-nightly.yml" in text and "skillbuild-lint" in text
    named = set(re.findall(r"^skillbuild (?:-n 1 )?([a-z_]+)", text, re.M)) - {"list"}
    creators = {name[len("task_"):] for name in dir(tasks) if name.startswith("task_")}
    assert named and named <= creators, sorted(named - creators)
    assert (ROOT / ".pre-commit-hooks.yaml").is_file()


def test_sigterm_and_ctrl_c_keep_their_exit_statuses_through_the_command(fake_vertex_factory, doit, market,
                                                                          tmp_path):  # noqa: F811
    import os
    import signal
    import sys

    from test_vertex_build import VertexBuild, finished, wait_for

    vx = VertexBuild(fake_vertex_factory(retry_delay=0.05, hang_seconds=8.0), doit, tmp_path)
    vx.server.config.latency = (0.25, 0.25)  # a window to stop it in while plugins remain
    env = {**vx.doit.env, **vx.env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "rules"),
           "SKILLBUILD_MAX_WORKERS": "1"}  # plugins one after another, so some remain when the signal comes
    for sig, status, says in ((signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")):
        log = tmp_path / f"{sig.name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "skillbuild.cli"], env=env, cwd=market, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(log, lambda text: " generate success " in text or " analyse success " in text, proc)
        os.killpg(proc.pid, sig)
        assert proc.wait(timeout=30) == status
        text = log.read_text()
        assert "Traceback" not in text and f"skillbuild: {says}" in text
        assert finished(text)
