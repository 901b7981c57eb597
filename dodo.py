"""skillbuild: keep every plugin's SKILL.md current.

    doit                     rebuild every stale SKILL.md
    doit list --status       every task, U (up to date) or R (will run)
    doit status              every plugin: fresh, stale, kept, skipped or failed
    doit skill:<plugin>      rebuild one plugin

Settings: [tool.skillbuild] in pyproject.toml, SKILLBUILD_<KEY> variables, or `doit key=value`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "rules"))  # the checkout's own package first

from skillbuild.tasks import *  # noqa: F401,F403,E402  (the task creators)
from skillbuild.tasks import doit_config  # noqa: E402

DOIT_CONFIG = doit_config()
