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
    """Create and mark the state folder, with a .gitignore so `git status` stays clean. Without `state_dir`
    (the checkout's cache/ and build/, outside any marketplace) nothing is added."""
    root = settings.state_dir
    if root is None:
        return
    root.mkdir(parents=True, exist_ok=True)
    if not is_state_dir(root):
        atomic_write(root / MARKER, MARKER_TEXT)
    if not (root / ".gitignore").is_file():
        atomic_write(root / ".gitignore", GITIGNORE_TEXT)
