"""A restore run to the end leaves nothing beside the plugin: its staging folder goes with it (found by the chaos bench)."""
from __future__ import annotations

from pathlib import Path

DEPLOY = "plugins/devops/deploy-checker"


def test_restore_leaves_no_staging_folder(doit, market):
    plugin = market / DEPLOY
    assert doit().returncode == 0
    readme = plugin / "README.md"
    readme.write_text(readme.read_text() + "\nOne more usage note.\n")
    assert doit().returncode == 0  # backs the plugin up before the new SKILL.md
    restored = doit("restore", "plugin=deploy-checker")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    beside = [p.name for p in Path(plugin).parent.iterdir() if p.name.startswith(".")]
    assert beside == []
