"""Discovery: read the marketplace catalog and plugin manifests, pick each plugin's inputs.

A bad catalog stops the whole load (`DiscoveryError`); a bad plugin only fails that plugin
(`Plugin.state == "error"` with a reason naming the file, line and column) so the rest build.
"""
from __future__ import annotations

import codecs
import fnmatch
import json
import os
import re
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillbuild.config import DEFAULT_EXCLUDE
from skillbuild.gitignore import Ignores
from skillbuild.memo import Deps, Memo, memo_for, stat_key
from skillbuild.providers.base import InputFile, PluginContext
from skillbuild.skill.skillmd import read_frontmatter_fields
from skillbuild.statedir import is_state_dir

CATALOG = Path(".claude-plugin") / "marketplace.json"
MANIFEST = Path(".claude-plugin") / "plugin.json"  # what makes a folder outside the catalog a plugin
SECRET_PATTERNS = (".env*", "*.pem", "*.key", "id_rsa*", "credentials*.json")
# `*secret*` too, except Markdown: a command called scan-secrets.md documents secrets, it holds none.
SECRET_WORD = "*secret*"
SCRIPT_SUFFIXES = {".py", ".sh", ".bash", ".js", ".mjs", ".cjs", ".ts", ".rb", ".go", ".pl", ".ps1", ".rs"}
SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", "dist", "build"}
SNIFF_BYTES = 8192
# The patterns as one regex each: `is_secret` runs once per file of every plugin on every load.
_CREDENTIALS = re.compile("|".join(fnmatch.translate(p) for p in SECRET_PATTERNS))
_SECRET_WORD = re.compile(fnmatch.translate(SECRET_WORD))


class DiscoveryError(Exception):
    """The catalog itself cannot be used; nothing can be built."""


@dataclass
class Plugin:
    key: str  # valid skill name; task names and cache files use it
    name: str  # name from the catalog (or manifest for untracked folders)
    path: Path | None  # plugin folder, None for external sources
    rel: str  # folder relative to the marketplace root, or a description of the external source
    tracked: bool = True  # listed in the catalog
    state: str = "ok"  # ok | external | skipped (shadowed, empty) | untracked (not built) | error
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    manifest_path: Path | None = None
    inputs: list[Path] = field(default_factory=list)  # text inputs, in priority order
    scripts: list[str] = field(default_factory=list)  # names only, never contents
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)
    commands: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    target: Path | None = None
    old_skills: list[Path] = field(default_factory=list)  # SKILL.md files other than the target

    def relpath(self, path: Path) -> str:
        if not self.path:
            return str(path)
        base, text = str(self.path), str(path)
        if text.startswith(base + os.sep):  # the common case, without pathlib's parsing: it runs per file per load
            return text[len(base) + 1:].replace(os.sep, "/")
        return path.relative_to(self.path).as_posix()


@dataclass
class Marketplace:
    root: Path
    name: str
    plugins: list[Plugin]

    def buildable(self) -> list[Plugin]:
        return [p for p in self.plugins if p.state == "ok"]


def skill_name(name: str) -> str:
    """Make a valid Agent Skills name: lowercase letters, digits, single hyphens, at most 64 chars."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:64].rstrip("-")


def json_error(path: Path, exc: json.JSONDecodeError) -> str:
    return f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"


def read_json(path: Path) -> Any:
    """Parse a JSON file; raise ValueError with file, line and column on bad input."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(json_error(path, exc)) from None


def load_catalog(root: Path) -> dict[str, Any]:
    path = root / CATALOG
    if not path.is_file():
        raise DiscoveryError(
            f"{path}: marketplace catalog not found. Point `marketplace=` (or SKILLBUILD_MARKETPLACE) at the folder "
            "that holds .claude-plugin/marketplace.json")
    try:
        catalog = read_json(path)
    except ValueError as exc:
        raise DiscoveryError(f"{exc}. Fix the catalog and run again") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("plugins", []), list):
        raise DiscoveryError(f"{path}: expected an object with a \"plugins\" list")
    return catalog


def looks_like_credentials(name: str) -> bool:
    """Key, certificate and environment files: never read, never sent off-site."""
    return _CREDENTIALS.match(name.lower()) is not None


def is_secret(name: str) -> bool:
    """Never read into a prompt: credentials files, and `*secret*` names that are not Markdown."""
    low = name.lower()
    return looks_like_credentials(low) or (_SECRET_WORD.match(low) is not None and not low.endswith(".md"))


def find_manifest(folder: Path) -> Path | None:
    for candidate in (folder / ".claude-plugin" / "plugin.json", folder / "plugin.json"):
        if candidate.is_file():
            return candidate
    return None


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink resolved, lies in `root` (resolved too)."""
    real, base = os.path.realpath(path), _real(str(root))
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


@lru_cache(maxsize=64)
def _real(path: str) -> str:
    return os.path.realpath(path)


@lru_cache(maxsize=None)
def _real_folder(path: str) -> str:
    return _realpath(path)


def _realpath(path: str) -> str:
    """`os.path.realpath`, resolving each parent folder once per load (catalog sources share their parents):
    a last component that is no symlink (nor `..`) adds itself to its parent's real path."""
    parent, leaf = os.path.split(path)
    if leaf in ("", ".", "..") or parent == path or os.path.islink(path):
        return os.path.realpath(path)
    return os.path.join(_real_folder(parent), leaf)


def _source_folder(root: Path, entry: dict[str, Any], plugin_root: str | None) -> Path:
    """Resolve a relative `source`; raise ValueError when it leaves the marketplace root."""
    source = entry["source"]
    candidates = [root / source]
    if plugin_root:
        candidates.append(root / plugin_root / source)
    reals = [_realpath(str(folder)) for folder in candidates]  # one resolve each: `inside` and the answer
    base = _real(str(root)).rstrip(os.sep)
    for real in reals:
        if real != base and not real.startswith(base + os.sep):
            raise ValueError(f"catalog entry '{entry.get('name')}': source {source!r} resolves outside the "
                             f"marketplace root {root}; sources must be folders inside it")
    for real in reals:
        if os.path.isdir(real):
            return Path(real)
    raise ValueError(f"catalog entry '{entry.get('name')}': source folder {source!r} does not exist under {root}")


def _external_reason(source: Any) -> str:
    if isinstance(source, dict):
        kind = source.get("source", "object")
        where = source.get("repo") or source.get("url") or source.get("path") or ""
        return f"external source ({kind}{': ' + str(where) if where else ''}): not built, it lives outside the marketplace"
    return f"unsupported source {source!r}: expected a relative path or an object"


def discover(root: Path, target_template: str = "skills/{name}/SKILL.md", file_max_bytes: int = 200_000,
             build_untracked: bool = True, exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
             memo: Memo | None = None) -> Marketplace:
    """Everything the build needs to know about a marketplace, read once when tasks load.

    Catalog entries come first, so an untracked folder of the same name is the one shadowed. `memo`: what
    the last run found in each plugin folder, reused while its files are unchanged (skillbuild/memo.py).
    """
    memo = memo if memo is not None else memo_for(None)
    root = root.resolve()
    _real_folder.cache_clear()  # folders resolved by the last load may have become symlinks since
    catalog = load_catalog(root)
    plugin_root = (catalog.get("metadata") or {}).get("pluginRoot")
    plugins: list[Plugin] = []
    seen_folders: set[Path] = set()
    for index, entry in enumerate(catalog.get("plugins", [])):
        plugin = _catalog_plugin(root, index, entry, plugin_root)
        if plugin.path:
            seen_folders.add(plugin.path)
        plugins.append(plugin)
    plugins += [_manifest_plugin(root, folder) for folder in _untracked_folders(root, seen_folders, exclude)]
    _mark_collisions(plugins)
    for plugin in plugins:
        if not plugin.tracked and not build_untracked and plugin.state in ("ok", "error"):
            plugin.state, plugin.reason = "untracked", "not in the catalog and build_untracked is off"
        if plugin.state == "ok":
            _select_inputs(plugin, target_template, file_max_bytes, memo)
            _mark_empty(plugin)
    return Marketplace(root, str(catalog.get("name") or root.name), plugins)


def _catalog_plugin(root: Path, index: int, entry: Any, plugin_root: str | None) -> Plugin:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        label = f"catalog entry #{index + 1}"
        return Plugin(key=f"entry-{index + 1}", name=label, path=None, rel="", state="error",
                      reason=f"{root / CATALOG}: {label} has no \"name\" string")
    name = entry["name"]
    plugin = Plugin(key=skill_name(name), name=name, path=None, rel=str(entry.get("source")))
    source = entry.get("source")
    if not isinstance(source, str):
        plugin.state, plugin.reason = "external", _external_reason(source)
        return plugin
    try:
        plugin.path = _source_folder(root, entry, plugin_root)
    except ValueError as exc:
        plugin.state, plugin.reason = "error", str(exc)
        return plugin
    plugin.rel = plugin.path.relative_to(root).as_posix()
    _load_manifest(plugin, catalog_entry=entry)
    return plugin


def _manifest_plugin(root: Path, folder: Path) -> Plugin:
    rel = folder.relative_to(root).as_posix()
    plugin = Plugin(key=skill_name(folder.name), name=folder.name, path=folder, rel=rel, tracked=False)
    _load_manifest(plugin, catalog_entry=None)
    if plugin.state == "ok" and isinstance(plugin.manifest.get("name"), str) and plugin.manifest["name"].strip():
        plugin.name = plugin.manifest["name"]
        plugin.key = skill_name(plugin.name)
        if not plugin.key:
            _unusable_name(plugin)
    return plugin


def _load_manifest(plugin: Plugin, catalog_entry: dict[str, Any] | None) -> None:
    assert plugin.path is not None
    plugin.manifest_path = find_manifest(plugin.path)
    manifest: dict[str, Any] = {}
    if plugin.manifest_path:
        try:
            manifest = read_json(plugin.manifest_path)
        except ValueError as exc:
            plugin.state, plugin.reason = "error", f"{exc}. Fix the manifest; the other plugins still build"
            return
        if not isinstance(manifest, dict):
            plugin.state, plugin.reason = "error", f"{plugin.manifest_path}: expected a JSON object"
            return
    # The catalog entry describes the plugin too; the plugin's own manifest wins where both speak.
    plugin.manifest = {**(catalog_entry or {}), **manifest}
    if not plugin.key:
        _unusable_name(plugin)


def _unusable_name(plugin: Plugin) -> None:
    plugin.state = "error"
    plugin.reason = (f"plugin '{plugin.name}' ({plugin.rel}): the name cannot become a valid skill name "
                     "(needs at least one letter or digit); rename it in the catalog or plugin.json")
    # Its task still needs a name of its own ("skill:" alone is no plugin's task); "--" is never a skill name.
    plugin.key = "unnamed--" + (skill_name(plugin.rel) or "root")


def _untracked_folders(root: Path, known: set[Path], exclude: tuple[str, ...]) -> list[Path]:
    """Folders with `.claude-plugin/plugin.json` that the catalog does not list (not nested inside a known plugin).

    Hidden folders (other tools' manifests such as `.cursor-plugin/`), what the marketplace's .gitignore
    files ignore and the `exclude` patterns (backups, templates, test fixtures) are never searched.
    One `scandir` per folder searched: its entries say whether a .gitignore or a manifest folder is there.
    """
    found: list[Path] = []
    ignores = Ignores()
    known_text = {str(k) for k in known}

    def visit(folder: str, rel: str) -> None:
        if rel and folder in known_text:  # a catalog plugin: nothing below it is searched, nor listed
            return
        entries = _scan(folder)
        names = {e.name for e in entries}
        if ".gitignore" in names:
            ignores.read(rel, Path(folder))
        if rel:
            if ".claude-plugin" in names and os.path.isfile(os.path.join(folder, MANIFEST)):
                found.append(Path(folder))
                return
        for entry in sorted((e for e in entries if _is_dir(e)), key=lambda e: e.name):
            sub = f"{rel}/{entry.name}" if rel else entry.name
            if _searched(entry, sub, exclude, ignores):
                visit(entry.path, sub)

    visit(str(root), "")
    return found


def _scan(folder: str) -> list[os.DirEntry]:
    """A folder's entries; none when it cannot be read (as os.walk skips it)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a symlink, as os.walk sorts names into folders and files
    except OSError:
        return False


@lru_cache(maxsize=8)
def _any_of(patterns: tuple[str, ...]) -> re.Pattern:
    """The `exclude` patterns as one regex (fnmatch's, case-sensitive): asked twice per folder searched."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")


def _searched(entry: os.DirEntry, rel: str, exclude: tuple[str, ...], ignores: Ignores) -> bool:
    """Whether the untracked search looks inside the folder `entry` (`rel`: its path from the marketplace root)."""
    name = entry.name
    if name.startswith(".") or name in SKIP_DIRS or entry.is_symlink() or is_state_dir(Path(entry.path)):
        return False
    pattern = _any_of(exclude)
    if pattern.match(name) or pattern.match(rel):
        return False
    return not ignores.ignored(rel, is_dir=True)


def _select_inputs(plugin: Plugin, target_template: str, file_max_bytes: int, memo: Memo) -> None:
    """The plugin's target, inputs (in priority order), scripts, commands and agents, and what was left out:
    kept in the memo with the stat keys of every folder and file looked at, so a no-op stats them only."""
    assert plugin.path is not None
    plugin.target = plugin.path / target_template.format(name=plugin.key)
    key = f"{plugin.target}\0{file_max_bytes}\0{plugin.manifest_path}"
    found = memo.get("inputs", key)
    if found is None:
        deps: Deps | None = []
        found = _look_at_files(plugin, file_max_bytes, deps)
        memo.put("inputs", key, str(plugin.path), None if found.pop("symlink", False) else deps, found)
    base = plugin.path
    plugin.inputs = [base / rel for rel in found["inputs"]]
    plugin.scripts = list(found["scripts"])
    plugin.excluded = [tuple(item) for item in found["excluded"]]  # type: ignore[misc]
    plugin.commands, plugin.agents = list(found["commands"]), list(found["agents"])
    plugin.old_skills = [p for p in plugin.inputs if p.name == "SKILL.md"]


def _look_at_files(plugin: Plugin, file_max_bytes: int, deps: Deps) -> dict[str, Any]:
    """Walk the plugin and pick its inputs; `deps` gets every folder's and file's stat key (taken before the
    file is read). A plugin with a symlink says so (`"symlink"`): its answer is not memoised."""
    assert plugin.path is not None and plugin.target is not None
    target = str(plugin.target)
    ranked: list[tuple[int, str]] = []
    found: dict[str, Any] = {"scripts": [], "excluded": []}
    base = len(str(plugin.path)) + 1
    for entry in _walk_files(plugin, found, deps):
        if entry.is_symlink():
            found["symlink"] = True
        rel = entry.path[base:].replace(os.sep, "/")
        reason, size = _exclusion(plugin, entry, file_max_bytes)
        try:  # every file: one that shrinks under the cap or turns to text must be seen
            deps.append([rel, *_key_of(entry)])
        except OSError:
            found["symlink"] = True  # a dangling link: not memoised
        if entry.path == target:  # never an input to itself
            continue
        if reason:
            found["excluded"].append([rel, reason])
            continue
        if os.path.splitext(entry.name)[1].lower() in SCRIPT_SUFFIXES:
            found["scripts"].append(rel)
            continue
        rank = _input_rank(plugin, entry, rel)
        if rank is None:
            continue
        if _is_binary(entry.path, size):
            found["excluded"].append([rel, "binary or not UTF-8 text"])
            continue
        ranked.append((rank, rel))
    ranked.sort()
    found["inputs"] = [rel for _, rel in ranked]
    found["commands"] = sorted({rel.rsplit("/", 1)[-1][:-3] for rel in found["inputs"]
                                if rel.startswith("commands/")})
    found["agents"] = sorted({name for rel in found["inputs"] if rel.startswith("agents/")
                              for name in _agent_names(plugin.path / rel)})
    return found


def _key_of(entry: os.DirEntry) -> tuple[int, int, int, int]:
    """`stat_key` from the entry's stat (taken once by `_exclusion`)."""
    st = entry.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _walk_files(plugin: Plugin, found: dict[str, Any], deps: Deps) -> list[os.DirEntry]:
    """Every file of the plugin, folder by folder in name order (a folder's files before its subfolders'),
    as `os.walk` would list them: one `scandir` per folder, and each entry keeps its stat for `_exclusion`.
    Each folder's stat key goes to `deps` before it is listed. Symlinked folders are never entered; one
    leaving the plugin is recorded as excluded."""
    assert plugin.path is not None
    files: list[os.DirEntry] = []
    root = str(plugin.path)
    pending = [root]
    while pending:
        folder = pending.pop()
        key = stat_key(folder)
        if key is not None:
            deps.append([folder[len(root) + 1:].replace(os.sep, "/"), *key])
        entries = sorted(_scan(folder), key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            if not _is_dir(entry):
                files.append(entry)
            elif entry.name in SKIP_DIRS or is_state_dir(Path(entry.path)):  # skillbuild's own state: never an input
                continue
            elif not entry.is_symlink():
                subfolders.append(entry.path)
            else:
                found["symlink"] = True
                if not inside(Path(entry.path), plugin.path):
                    found["excluded"].append([plugin.relpath(Path(entry.path)), "symlink leaving the plugin folder"])
        pending.extend(reversed(subfolders))  # depth first, in name order
    return files


def _exclusion(plugin: Plugin, entry: os.DirEntry, file_max_bytes: int) -> tuple[str | None, int]:
    """(why the file is left out or None, its size): the entry's own stat, taken once."""
    assert plugin.path is not None
    if is_secret(entry.name):
        return "secret-looking file: never read", 0
    if entry.is_symlink() and not inside(Path(entry.path), plugin.path):
        return "symlink leaving the plugin folder", 0
    try:
        if not entry.is_file():
            return "not a regular file", 0
        size = entry.stat().st_size
    except OSError:
        return "not a regular file", 0
    if size > file_max_bytes:
        return f"{size} bytes, over the {file_max_bytes}-byte cap", size
    return None, size


def _input_rank(plugin: Plugin, entry: os.DirEntry, rel: str) -> int | None:
    """Priority of a file as a provider input (lower first); None when it is not an input."""
    lower = rel.lower()
    if plugin.manifest_path and entry.path == str(plugin.manifest_path):
        return 0
    if "/" not in rel and lower.startswith("readme") and lower.endswith(".md"):
        return 1
    if lower.startswith("commands/") and lower.endswith(".md"):
        return 2
    if lower.startswith("agents/") and lower.endswith(".md"):
        return 3
    if lower.startswith("skills/") and entry.name == "SKILL.md":
        return 4
    if lower in ("hooks/hooks.json", ".mcp.json"):
        return 5
    return None


def _is_binary(path: str, size: int) -> bool:
    """NUL bytes or bytes that are not UTF-8 in the first block (a character cut by its end is no fault)."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if b"\x00" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) >= size)
    except UnicodeDecodeError:
        return True
    return False


def _agent_names(path: Path) -> set[str]:
    names = {path.stem}
    meta = read_frontmatter_fields(path.read_text(encoding="utf-8", errors="replace"))
    if meta.get("name"):
        names.add(meta["name"])
    return names


def _mark_collisions(plugins: list[Plugin]) -> None:
    """Two plugins with one skill name: the later one gets a task key of its own. Two catalog entries fail;
    a folder outside the catalog is shadowed (skipped, never a failure): it is a copy of the plugin named."""
    owners: dict[str, Plugin] = {}
    for plugin in plugins:
        first = owners.setdefault(plugin.key, plugin)
        if first is plugin:
            continue
        if not plugin.tracked:
            plugin.state = "skipped"
            plugin.reason = (f"shadowed by {'catalog ' if first.tracked else ''}plugin '{first.name}' ({first.rel}):"
                             f" '{plugin.name}' ({plugin.rel}) is not in the catalog and has the same skill name "
                             f"'{plugin.key}'; not built")
        elif plugin.state == "ok":
            plugin.state = "error"
            plugin.reason = (f"plugin '{plugin.name}' ({plugin.rel}) and '{first.name}' ({first.rel}) both become "
                             f"skill name '{plugin.key}'; rename one of them")
        base, n = plugin.key, 2
        while f"{base}-{n}" in owners:
            n += 1
        plugin.key = f"{base}-{n}"
        owners[plugin.key] = plugin


def _mark_empty(plugin: Plugin) -> None:
    """A manifest and nothing else (no description, no input with text): there is nothing to write a skill from,
    so no call is spent on it."""
    if str(plugin.manifest.get("description") or "").strip():
        return
    if any(path != plugin.manifest_path and path.read_bytes().strip() for path in plugin.inputs):
        return
    plugin.state = "skipped"
    plugin.reason = ("empty plugin: only a manifest, with no description, README, commands, agents, skills or "
                     "hooks; nothing to write a skill from (add a description or a README)")


def plugin_context(plugin: Plugin, file_budget: int, total_budget: int,
                   hand_written: str | None = None) -> PluginContext:
    """Read the inputs in priority order within the byte budgets; record what was cut.

    `hand_written` is the text of a hand-written SKILL.md at the target: it comes first and whole, never
    cut by the budgets (it counts against the total, so other inputs are cut instead)."""
    files: list[InputFile] = []
    cut: list[str] = []
    left = total_budget
    original = ""
    if hand_written is not None and plugin.target is not None:
        original = plugin.relpath(plugin.target)
        files.append(InputFile(original, hand_written))
        left -= len(hand_written.encode("utf-8"))
    for path in plugin.inputs:
        rel = plugin.relpath(path)
        data = path.read_bytes()
        allowed = min(file_budget, left)
        if allowed <= 0:
            cut.append(f"{rel}: left out, total budget of {total_budget} bytes spent")
            continue
        truncated = len(data) > allowed
        if truncated:
            cut.append(f"{rel}: cut from {len(data)} to {allowed} bytes")
            data = data[:allowed]
        left -= len(data)
        files.append(InputFile(rel, data.decode("utf-8", errors="ignore"), truncated))
    return PluginContext(name=plugin.name, skill_name=plugin.key, manifest=plugin.manifest, files=tuple(files),
                         scripts=tuple(plugin.scripts), commands=tuple(plugin.commands),
                         agents=tuple(plugin.agents), cut=tuple(cut), hand_written=original)
