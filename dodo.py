"""skillbuild: keep every plugin's SKILL.md current.

    doit                     rebuild every stale SKILL.md
    doit list --status       every task, U (up to date) or R (will run)
    doit status              every plugin: fresh, stale, kept, skipped or failed
    doit skill:<plugin>      rebuild one plugin

Settings: [tool.skillbuild] in pyproject.toml, SKILLBUILD_<KEY> variables, or `doit key=value`.
"""
from rules.tasks import *  # noqa: F401,F403  (the task creators)
from rules.tasks import doit_config

DOIT_CONFIG = doit_config()
