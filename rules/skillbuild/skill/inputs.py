"""What a provider may see of a plugin's inputs: HTML comments stripped, secrets redacted, links rebased."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from skillbuild.providers.base import PluginContext
from skillbuild.skill import markdown, secrets


def prepare(context: PluginContext, folder: Path | None, skill_dir: str = "") -> tuple[PluginContext, int]:
    """The context a prompt or the offline writer gets, and how many values were redacted from it.

    Comments go first (a reader never sees them, so they are never instructions or facts); then the values of
    `env` and `headers` maps in JSON inputs, then anything credential-shaped in any input or the manifest.
    Relative links in Markdown inputs are rewritten as seen from `skill_dir` (the written SKILL.md's folder,
    relative to `folder`), so text copied from a README stays linked; a link to nothing is unlinked."""
    files, count = [], 0
    for f in context.files:
        text = markdown.strip_comments(f.text)
        if f.rel.lower().endswith(".json"):
            text, n = secrets.redact_config_values(text)
            count += n
        text, n = secrets.redact_counted(text)
        count += n
        if folder is not None and f.rel.lower().endswith(".md"):
            text = markdown.rebase_links(text, markdown.folder_of(f.rel), skill_dir,
                                         lambda rooted: os.path.exists(os.path.normpath(folder / rooted)))
        files.append(dataclasses.replace(f, text=text))
    manifest, n = secrets.redact_data(_without_comments(context.manifest))
    return dataclasses.replace(context, files=tuple(files), manifest=manifest), count + n


def _without_comments(value):
    """A parsed manifest with HTML comments stripped from every string in it."""
    if isinstance(value, dict):
        return {key: _without_comments(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_comments(item) for item in value]
    return markdown.strip_comments(value) if isinstance(value, str) else value
