"""The installed `skillbuild` command: doit itself, loaded with skillbuild's tasks, run in a marketplace."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain
from doit.version import VERSION as DOIT_VERSION

from skillbuild import __version__, tasks
from skillbuild.discovery import CATALOG
from skillbuild.safety import interrupt

EXIT_INVALID_SETTINGS = 3  # doit's own status for an error before any task runs


class _Loader(ModuleTaskLoader):
    """skillbuild's task creators; DOIT_CONFIG is made when doit asks for it, after it has read the command
    line's name=value variables (as dodo.py makes it when doit imports it), so a bad setting is doit's exit 3."""

    def load_doit_config(self):
        self.namespace["DOIT_CONFIG"] = tasks.doit_config()
        return super().load_doit_config()


def find_root(start: Path) -> Path | None:
    """The nearest folder from `start` upward that holds .claude-plugin/marketplace.json."""
    for folder in (start, *start.parents):
        if (folder / CATALOG).is_file():
            return folder
    return None


def _given_marketplace(argv: list[str]) -> str | None:
    """`marketplace=PATH` on the command line (the last one, as doit keeps), else SKILLBUILD_MARKETPLACE."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("marketplace=")]
    return given[-1] if given else (os.environ.get("SKILLBUILD_MARKETPLACE") or None)


def marketplace_root(argv: list[str], cwd: Path) -> Path | None:
    given = _given_marketplace(argv)
    if given is not None:
        return (cwd / Path(given).expanduser()).resolve()  # relative to where the command runs
    return find_root(cwd.resolve())


def _not_found(cwd: Path) -> str:
    return (f"skillbuild: no marketplace here: neither {cwd} nor any folder above it holds {CATALOG.as_posix()}.\n"
            f"Run skillbuild inside your marketplace's repository, or point it at one: "
            f"`skillbuild marketplace=PATH` (or SKILLBUILD_MARKETPLACE=PATH).")


def version_text() -> str:
    return f"skillbuild {__version__} (doit {'.'.join(str(part) for part in DOIT_VERSION)})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(version_text())
        return 0
    cwd = Path.cwd()
    root = marketplace_root(argv, cwd)
    if root is None:
        print(_not_found(cwd), file=sys.stderr)
        return EXIT_INVALID_SETTINGS
    # An absolute marketplace= so it means the same folder to every reader (settings resolve relative paths
    # against the marketplace, not the working folder); tasks.cli_vars() reads sys.argv.
    argv = [f"marketplace={root}" if a.startswith("marketplace=") else a for a in argv]
    if os.environ.get("SKILLBUILD_MARKETPLACE"):
        os.environ["SKILLBUILD_MARKETPLACE"] = str(root)
    sys.argv = [sys.argv[0] if sys.argv else "skillbuild", *argv]
    tasks.HOME["path"] = root
    namespace = {name: getattr(tasks, name) for name in tasks.__all__ if name.startswith("task_")}
    main_ = DoitMain(_Loader(namespace))
    main_.BIN_NAME = "skillbuild"
    try:
        return main_.run(argv)
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C after doit saved its state (safety/interrupt.py)
        return interrupt.farewell()


if __name__ == "__main__":
    sys.exit(main())
