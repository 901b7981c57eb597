"""skillbuild: an incremental doit build of SKILL.md files for a Claude Code plugin marketplace."""

__version__ = "0.1.0"
