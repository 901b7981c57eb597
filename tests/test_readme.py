"""The README shows what the code does: its audit queries are the ones the tests run, its commands exist."""
from __future__ import annotations

import re

from conftest import ROOT
from skillbuild.store.audit import README_QUERIES
from skillbuild.config import KEYS

README = (ROOT / "README.md").read_text()


def test_audit_queries_are_printed_exactly_as_tested():
    assert 'export AUDIT_DB="$(ls -t build/*/audit.sqlite3 | head -n 1)"' in README
    for title, sql in README_QUERIES:
        assert sql.strip() in README, f"README's query for {title!r} differs from skillbuild/store/audit.py README_QUERIES"


def section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n## ", start + len(heading))
    return README[start:end if end > 0 else None]


def test_settings_named_in_the_readme_exist():
    tables = section("## Configuration") + section("## Quota")
    named = {k for cell in re.findall(r"^\| ((?:`[a-z_]+`(?:, )?)+)", tables, re.M)
             for k in re.findall(r"`([a-z_]+)`", cell)}
    assert named, "the configuration tables were not found"
    assert named - set(KEYS) == set(), f"README names settings that do not exist: {sorted(named - set(KEYS))}"


def test_every_documented_task_exists():
    import skillbuild.tasks as tasks

    documented = set(re.findall(r"`doit (?:-n 1 )?([a-z_]+)[ `]", README)) - {"list", "clean", "provider",
                                                                              "marketplace", "model", "json_lines"}
    creators = {name[len("task_"):] for name in dir(tasks) if name.startswith("task_")}
    assert documented <= creators, f"README documents tasks that do not exist: {sorted(documented - creators)}"
