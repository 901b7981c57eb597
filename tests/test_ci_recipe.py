"""The nightly GitHub Actions recipe (examples/ci/skillbuild-nightly.yml): its shape, and zizmor finds nothing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "ci" / "skillbuild-nightly.yml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _recipe() -> dict:
    data = yaml.safe_load(RECIPE.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the bare key `on` as true
    return data


def _steps() -> list[dict]:
    (job,) = _recipe()["jobs"].values()
    return job["steps"]


def _uses(prefix: str) -> list[dict]:
    return [step for step in _steps() if step.get("uses", "").startswith(prefix)]


def test_triggers_concurrency_and_least_privilege():
    data = _recipe()
    assert set(data["on"]) == {"schedule", "workflow_dispatch"} and data["on"]["schedule"][0]["cron"]
    assert data["concurrency"]["group"] and data["concurrency"]["cancel-in-progress"] is False
    assert data["permissions"] == {}
    (job,) = data["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write", "actions": "read",
                                  "id-token": "write"}


def test_every_action_is_pinned_to_a_commit_and_no_expression_reaches_a_shell():
    for step in _steps():
        if "uses" in step:
            assert PINNED.match(step["uses"]), step["uses"]
        assert "${{" not in step.get("run", ""), step  # values reach a shell through env only


def test_the_steps_the_readme_promises():
    runs = [step["run"] for step in _steps() if "run" in step]
    order = [next(i for i, r in enumerate(runs) if r.startswith(cmd)) for cmd in
             ("skillbuild plan", "skillbuild 2>&1", "skillbuild -n 1 backup")]
    assert order == sorted(order)
    (auth,) = _uses("google-github-actions/auth@")
    assert "workload_identity_provider" in auth["with"] and "credentials_json" not in auth["with"]
    (cache,) = _uses("actions/cache@")
    assert cache["with"]["path"] == ".skillbuild/cache"
    (download,) = _uses("actions/download-artifact@")
    assert download["with"]["path"] == ".skillbuild/build" and download["with"]["run-id"]
    uploads = {step["with"]["name"]: step["with"]["path"] for step in _uses("actions/upload-artifact@")}
    assert uploads == {"skillbuild-build": ".skillbuild/build", "skillbuild-report": ".skillbuild/build/report.html"}
    (backup,) = [step for step in _steps() if step.get("run") == "skillbuild -n 1 backup"]
    assert backup["env"] == {"TURSO_DATABASE_URL": "${{ secrets.TURSO_DATABASE_URL }}",
                             "TURSO_AUTH_TOKEN": "${{ secrets.TURSO_AUTH_TOKEN }}"}
    (pull,) = _uses("peter-evans/create-pull-request@")
    assert pull["with"]["branch"] != "main" and pull["with"]["add-paths"] == "**/SKILL.md"
    assert any("$GITHUB_STEP_SUMMARY" in r for r in runs)


def test_zizmor_finds_nothing_at_medium_or_above():
    zizmor = Path(sys.executable).parent / "zizmor"
    proc = subprocess.run([str(zizmor), "--offline", "--format", "json", "--min-severity", "medium", str(RECIPE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []
