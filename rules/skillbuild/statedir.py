"""State folders: marked so no walk of a marketplace (discovery, backups, archives) ever enters them."""
from __future__ import annotations

from pathlib import Path

from skillbuild.store.writing import atomic_write

# A file in each state folder. Walkers look for it rather than for a configured path, so a state folder is
# skipped whatever `state_dir` said when it was made, and inside a plugin whose source is the marketplace root.
MARKER = ".skillbuild-state"
MARKER_TEXT = "skillbuild state: never discovered, read as input, backed up or archived.\n"
GITIGNORE_TEXT = "# skillbuild state (rebuildable cache, audit DB, backups): not for version control\n*\n"


def is_state_dir(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def prepare(settings) -> None:
    """Create and mark every state folder; a `state_dir` also gets a .gitignore so `git status` stays clean."""
    for root in settings.state_roots:
        root.mkdir(parents=True, exist_ok=True)
        if not is_state_dir(root):
            atomic_write(root / MARKER, MARKER_TEXT)
    if settings.values["state_dir"]:
        ignore = settings.state_roots[0] / ".gitignore"
        if not ignore.is_file():
            atomic_write(ignore, GITIGNORE_TEXT)
