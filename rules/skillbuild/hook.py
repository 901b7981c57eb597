"""`skillbuild-lint`: the pre-commit hook's checks of hand-edited SKILL.md files (offline, no settings, no state)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skillbuild.config import KEYS
from skillbuild.skill.validation import lint_skill


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillbuild-lint",
        description="Check SKILL.md files against the Agent Skills spec and skillbuild's rules for any skill: "
                    "placeholders, secrets, relative links, empty sections, size budget.")
    parser.add_argument("files", nargs="*", type=Path, help="SKILL.md files (other files are ignored)")
    parser.add_argument("--max-bytes", type=int, default=KEYS["max_bytes"].default,
                        help="largest SKILL.md allowed (default: %(default)s, the max_bytes setting's default)")
    parser.add_argument("--max-body-lines", type=int, default=KEYS["max_body_lines"].default,
                        help="longest body in lines (default: %(default)s)")
    return parser


def lint_file(path: Path, max_bytes: int, max_body_lines: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"cannot be read as UTF-8 text: {exc}"]
    # The spec's name rule compares the name with the folder; links resolve from it.
    return lint_skill(text, path.resolve().parent, max_bytes=max_bytes, max_body_lines=max_body_lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    failed = 0
    for path in args.files:
        if path.name != "SKILL.md":
            continue
        reasons = lint_file(path, args.max_bytes, args.max_body_lines)
        failed += bool(reasons)
        for reason in reasons:
            print(f"{path}: {reason}")
    if failed:
        print(f"skillbuild-lint: {failed} SKILL.md file(s) to fix", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
