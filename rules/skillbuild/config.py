"""Settings: `[tool.skillbuild]` in pyproject.toml < environment `SKILLBUILD_<KEY>` < `doit key=value`.

Every key is declared once in KEYS with its type and default; an unknown or invalid key is a
`ConfigError` naming the key, where it came from, and what is accepted.
"""
from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: rules/skillbuild/config.py
LOCK_NAME = "run.lock"  # in cache/<m>/; held by the build of that marketplace


class ConfigError(Exception):
    """A setting is unknown or invalid; the message names it and the fix."""


def _bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return str(value)

    return parse


def _positive(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError("expected a number above 0")
        return number

    return parse


def _non_negative(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number < 0:
            raise ValueError("expected a number of 0 or more")
        return number

    return parse


def _between(low: float, high: float, kind: type = int) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if not low <= number <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return number

    return parse


def _patterns(value: Any) -> tuple[str, ...]:
    """A list of glob patterns: a TOML list, or a comma-separated string (environment, command line)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of glob patterns, or a comma-separated string of them")
    return tuple(i.strip() for i in items if i.strip())


# Folders that hold copies, templates and test data rather than plugins: the untracked search skips them.
DEFAULT_EXCLUDE = ("backups", "backup", "*.bak", "templates", "template", "fixtures", "tests", "test",
                   "__tests__", "e2e", "examples", "example", "samples", "node_modules", "dist", "build",
                   "vendor", "third_party", "archive", "archived", "deprecated", "site-packages")


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """None (or empty) means "use the pace preset's value"."""
    def wrapped(value: Any) -> Any:
        return None if value in (None, "") else parse(value)

    return wrapped


@dataclass(frozen=True)
class Key:
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    env: tuple[str, ...] = ()  # extra environment variables read before SKILLBUILD_<KEY>
    secret: bool = False  # never printed, logged or stored


KEYS: dict[str, Key] = {
    # what to build
    "marketplace": Key(str, "examples", "marketplace root (folder holding .claude-plugin/marketplace.json)"),
    "provider": Key(_choice("offline", "vertex", "auto"), "auto",
                    "offline, vertex, or auto (vertex when a Google Cloud project is configured)"),
    "build_untracked": Key(_bool, True, "also build plugin folders the catalog does not list"),
    "exclude": Key(_patterns, DEFAULT_EXCLUDE,
                   "glob patterns of folders (a name or a path from the marketplace root) the search for untracked "
                   "plugins skips; replaces the default list"),
    "skill_path": Key(str, "skills/{name}/SKILL.md", "target path inside each plugin; {name} is the skill name"),
    "old_skills": Key(_choice("leave"), "leave", "what happens to a SKILL.md elsewhere in the plugin"),
    "keep_min_bytes": Key(_non_negative(int), 8000,
                          "a hand-written SKILL.md (no provenance of ours, or edited since) of at least this size is kept"),
    "prompts_dir": Key(_optional_str, None, "folder holding analysis.md and generation.md (default: the package's)"),
    # inputs
    "file_max_bytes": Key(_positive(int), 200_000, "files above this size are not inputs"),
    "input_file_budget": Key(_positive(int), 24_000, "bytes of one file sent to a provider"),
    "input_total_budget": Key(_positive(int), 120_000, "bytes of all files sent to a provider for one plugin"),
    # gates
    "min_bytes": Key(_positive(int), 1500, "smallest SKILL.md an AI provider may write (catches truncated or "
                     "empty output; raised by per_item_min_bytes per command and agent, never padding)"),
    "max_bytes": Key(_positive(int), 14000, "largest SKILL.md any provider may write"),
    "offline_min_bytes": Key(_positive(int), 300, "smallest SKILL.md the offline provider may write (it never pads)"),
    "per_item_min_bytes": Key(_non_negative(int), 20, "bytes the minimum grows by per command and agent the "
                              "plugin defines (each is listed at a glance), up to half of max_bytes"),
    "max_body_lines": Key(_positive(int), 500, "longest SKILL.md body, in lines"),
    "max_body_tokens": Key(_positive(int), 5000, "largest SKILL.md body in estimated tokens (bytes / 4)"),
    "max_reference_bytes": Key(_positive(int), 40000, "largest file a skill may hold under references/"),
    # quality and routing (`doit lint`, `doit routing`)
    "min_quality": Key(_between(0, 100), 60, "`doit lint` exits 1 when a SKILL.md scores below this (0-100)"),
    "description_limit": Key(_positive(int), 1536,
                             "characters of a description Claude Code shows; longer ones are cut"),
    "listing_budget_chars": Key(_positive(int), 8000,
                                "characters of names and descriptions the skill listing may take (~1% of the context)"),
    "min_eval_top1": Key(_between(0, 1, float), 0.0,
                         "`doit routing` exits 1 when evals/triggers.jsonl's top-1 accuracy is below this (0-1)"),
    # vertex
    "model": Key(str, "gemini-2.5-flash", "Gemini model id on Vertex AI (gemini-2.0-flash is retired)"),
    "project": Key(_optional_str, None, "Google Cloud project", env=("GOOGLE_CLOUD_PROJECT",)),
    "location": Key(str, "us-central1", "Vertex AI location", env=("GOOGLE_CLOUD_LOCATION",)),
    "vertex_endpoint": Key(_optional_str, None, "endpoint override (tests, benchmarks)"),
    "vertex_token": Key(_optional_str, None, "static bearer token, used only with vertex_endpoint", secret=True),
    "request_timeout": Key(_positive(float), 120.0, "seconds one HTTP attempt may take"),
    "max_attempts": Key(_positive(int), 5, "HTTP attempts per call, retries included"),
    "retry_max_seconds": Key(_positive(float), 600.0, "total seconds one call may spend retrying"),
    "retry_backoff_seconds": Key(_positive(float), 1.0, "first retry wait; doubles per retry, with jitter"),
    # the throttle (skillbuild/calls/throttle.py); empty means the pace preset's value
    "pace_preset": Key(_choice("default", "seed", "seed-initial"), "default",
                       "named pacing: default (quota-driven), seed (45-60 s per call), seed-initial (90-120 s)"),
    "rpm": Key(_optional(_positive(float)), None, "requests per minute the quota allows (15)"),
    "rpd": Key(_optional(_positive(int)), None, "requests per quota day (1500)"),
    "tpm": Key(_optional(_positive(int)), None, "tokens per minute, if the quota has one"),
    "safety_factor": Key(_optional(_positive(float)), None, "divide the limits by this (1.0; the seed presets 3.0)"),
    "min_gap": Key(_optional(_non_negative(float)), None, "seconds between calls at least (0)"),
    "jitter": Key(_optional(_non_negative(float)), None, "random seconds added to the gap (0)"),
    "rest_every": Key(_optional(_non_negative(int)), None, "rest after every N plugins (0: never)"),
    "rest_seconds": Key(_optional_str, None, "rest length, seconds or a range like 30-60"),
    "quota_tz": Key(_optional_str, None, "time zone of the quota day's reset (America/Los_Angeles)"),
    "time_scale": Key(_optional(_positive(float)), None, "simulation speed-up for benchmarks (1.0)"),
    "max_workers": Key(_positive(int), 64, "most worker threads a remote build starts when `-n` is not given"),
    "wait_for_reset": Key(_bool, False, "when today's budget is spent, wait for the reset instead of stopping"),
    "price_input_per_mtok": Key(_non_negative(float), 0.30, "USD per million input tokens, for `doit plan`"),
    "price_output_per_mtok": Key(_non_negative(float), 2.50, "USD per million output tokens, for `doit plan`"),
    "price_batch_input_per_mtok": Key(_non_negative(float), 0.15, "USD per million input tokens in a batch job"),
    "price_batch_output_per_mtok": Key(_non_negative(float), 1.25, "USD per million output tokens in a batch job"),
    "max_cost_usd": Key(_optional(_non_negative(float)), None, "USD one run (online or batch) may spend: a run "
                        "estimated above it does not start, an online run stops sending when it is reached"),
    # batch prediction (`doit batch`)
    "batch_bucket": Key(_optional_str, None, "Cloud Storage bucket for batch input and output (gs://B or B)"),
    "batch_poll_seconds": Key(_positive(float), 30.0, "first wait between polls of a batch job (backs off to 10x)"),
    "batch_min_plugins": Key(_non_negative(int), 50, "below this many stale plugins `doit plan mode=batch` "
                                                     "says batch is not worth it"),
    # backups
    "turso_url_env": Key(str, "TURSO_DATABASE_URL", "environment variable holding the Turso database URL"),
    "turso_token_env": Key(str, "TURSO_AUTH_TOKEN", "environment variable holding the Turso auth token"),
    "backup_chunk_size": Key(_positive(int), 1 << 20, "bytes per archive chunk in Turso (at most 4 MiB)"),
    "backup_keep": Key(_positive(int), 10, "pre-change backups kept per plugin (the only one is never deleted)"),
    "backup_keep_bytes": Key(_non_negative(int), 0,
                             "bytes one plugin's backups may use (hard-linked files count once); the oldest go "
                             "first, never the newest; 0: no byte limit"),
    "retain_days": Key(_positive(int), 30,
                       "`doit prune` removes run logs and rejected candidates older than this many days"),
    # watching a run
    "json_lines": Key(_bool, False, "print one JSON object per event instead of plain lines"),
    "lock_wait": Key(_non_negative(float), 0.0, "seconds to wait for another build of the marketplace (0: exit 75)"),
    # where state lives
    "cache_root": Key(str, "cache", "rebuildable state (doit state, analysis, response cache)"),
    "build_root": Key(str, "build", "state to keep (audit DB, backups, logs, reports)"),
    "state_dir": Key(_optional_str, None,
                     "one folder for all state: cache_root and build_root default to its cache/ and build/ "
                     "(the installed `skillbuild` command: .skillbuild in the marketplace)"),
}

# Names `doit name=value` may carry that are task arguments, not settings.
TASK_ARGS = {"plugin", "at", "backup", "dest", "force", "verify", "live", "cancel", "mode", "cache", "logs",
             "rejected", "dry"}


def _read_pyproject(path: Path) -> dict[str, Any]:
    return _read_toml(path).get("tool", {}).get("skillbuild", {})


def _layer(source: str, values: Mapping[str, Any], raw: dict[str, tuple[str, Any]]) -> None:
    for key, value in values.items():
        if key not in KEYS:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(f"{source}: unknown setting '{key}'. Known settings: {known}")
        raw[key] = (source, value)


def _env_values(env: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, spec in KEYS.items():
        for name in (*spec.env, f"SKILLBUILD_{key.upper()}"):
            if env.get(name, "") != "":
                values[key] = env[name]
    return values


def _check_env_names(env: Mapping[str, str]) -> None:
    known = {f"SKILLBUILD_{key.upper()}" for key in KEYS} | EXTRA_ENV
    for name in env:
        if name.startswith("SKILLBUILD_") and name not in known:
            raise ConfigError(f"environment: unknown variable {name}. Known: {', '.join(sorted(known))}")


# Environment variables owned by modules other than config (kept here so typos are still caught).
EXTRA_ENV: set[str] = set()


def marketplace_id(root: Path) -> str:
    """Readable and unique: the folder name plus a hash of its absolute path, so two copies never share state."""
    slug = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-") or "marketplace"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


@dataclass(frozen=True)
class Settings:
    values: dict[str, Any]
    sources: dict[str, str]
    project_root: Path

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        shown = {k: ("***" if KEYS[k].secret and v else v) for k, v in self.values.items()}
        return f"Settings({shown})"

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.project_root / path)

    @cached_property
    def marketplace(self) -> Path:  # type: ignore[override]
        return self._path(self.values["marketplace"]).resolve()

    @property
    def provider(self) -> str:  # type: ignore[override]
        chosen = self.values["provider"]
        if chosen == "auto":
            return "vertex" if self.values["project"] else "offline"
        return chosen

    @property
    def model_id(self) -> str:
        """The model that answers, decided here only: recorded in provenance, the audit DB, cache keys and
        doit's task config, and sent to the API."""
        if self.provider == "offline":
            from skillbuild.providers.offline import MODEL

            return MODEL
        return self.values["model"]

    @cached_property
    def marketplace_id(self) -> str:
        """Computed once: every path below and every task's setup asks for it."""
        return marketplace_id(self.marketplace)

    @property
    def prompts_dir(self) -> Path:  # type: ignore[override]
        from skillbuild.skill.schema import PROMPTS_DIR

        chosen = self.values["prompts_dir"]
        return self._path(chosen) if chosen else PROMPTS_DIR

    # Where state lives: the only place a state path is built. cache/<m>/ is rebuildable (deleting it
    # costs API calls, never data); build/ holds what must be kept.

    @cached_property
    def cache_dir(self) -> Path:
        return self._path(self.values["cache_root"]) / self.marketplace_id

    @property
    def analysis_dir(self) -> Path:
        return self.cache_dir / "analysis"

    @property
    def rejected_dir(self) -> Path:
        return self.cache_dir / "rejected"

    @property
    def responses_dir(self) -> Path:
        """The response cache (calls/response_cache.py)."""
        return self.cache_dir / "responses"

    @property
    def spilled_responses_dir(self) -> Path:
        """Paid answers the response cache could not take (its disk full): kept with the state to keep, read by
        every later lookup (calls/response_cache.py)."""
        return self.build_dir / "responses-spilled"

    @property
    def memo_file(self) -> Path:
        """What the last run found in each plugin folder, reused while the files are unchanged (skillbuild/memo.py)."""
        return self.cache_dir / "memo.json"

    @property
    def state_file(self) -> Path:
        """doit's own state (its dep_file)."""
        return self.cache_dir / "doit-state.sqlite3"

    @property
    def lock_file(self) -> Path:
        """One build per marketplace at a time (safety/runlock.py)."""
        return self.cache_dir / LOCK_NAME

    @cached_property
    def build_root(self) -> Path:  # type: ignore[override]
        return self._path(self.values["build_root"])

    @property
    def state_dir(self) -> Path | None:  # type: ignore[override]
        """The one folder of all state (installed `skillbuild`: <marketplace>/.skillbuild), marked by
        skillbuild/statedir.py so no walk of a marketplace enters it; None: the checkout's cache/ and build/."""
        chosen = self.values["state_dir"]
        return self._path(chosen).resolve() if chosen else None

    @property
    def throttle_db(self) -> Path:
        """Shared by every marketplace: the quota belongs to the Google project, not to one marketplace."""
        return self.build_root / "throttle.sqlite3"

    @property
    def latest_report_file(self) -> Path:
        """A copy of the report of the marketplace reported on last: the page to open first."""
        return self.build_root / "report.html"

    @cached_property
    def build_dir(self) -> Path:
        return self.build_root / self.marketplace_id

    @property
    def audit_db(self) -> Path:
        return self.build_dir / "audit.sqlite3"

    @property
    def logs_dir(self) -> Path:
        return self.build_dir / "logs"

    def log_file(self, run_id: str) -> Path:
        """One run's log (ui/progress.py's `log_path` names it the same way)."""
        return self.logs_dir / f"{run_id}.log"

    @property
    def backups_dir(self) -> Path:
        """Per-plugin snapshots taken before a SKILL.md changes (safety/backup.py)."""
        return self.build_dir / "backups"

    @property
    def archives_dir(self) -> Path:
        """`doit backup` archives of the whole marketplace (safety/archive.py)."""
        return self.backups_dir / "archive"

    @property
    def originals_dir(self) -> Path:
        """Hand-written SKILL.md files a build replaced: still the input and the never-worse reference."""
        return self.build_dir / "originals"

    @property
    def journal_dir(self) -> Path:
        """Staging paths and unfinished restores of this marketplace's runs (safety/journal.py), so the next
        run removes or completes exactly what a killed one left."""
        return self.build_dir / "journal"

    def journal(self):
        from skillbuild.safety.journal import Journal

        return Journal(self.journal_dir)

    @property
    def restored_dir(self) -> Path:
        """Where `doit restore_offsite` puts a restore when no dest= is given."""
        return self.build_dir / "restored"

    @property
    def report_file(self) -> Path:
        return self.build_dir / "report.html"

    @property
    def routing_file(self) -> Path:
        """The last `doit routing` result, for the report page."""
        return self.build_dir / "routing.json"

    def gate_bounds(self, provider_name: str, items: int = 0) -> tuple[int, int]:
        """(min, max) bytes of a SKILL.md; `items`: the plugin's commands and agents, which raise the minimum."""
        low = self.offline_min_bytes if provider_name == "offline" else self.min_bytes
        return min(low + self.per_item_min_bytes * items, max(low, self.max_bytes // 2)), self.max_bytes

    def fingerprint(self, *keys: str) -> dict[str, str]:
        """The named settings as strings, for doit's config_changed (secrets never included)."""
        return {k: str(getattr(self, k)) for k in keys if not KEYS[k].secret}


LOCAL_SETTINGS = ".skillbuild.toml"  # a marketplace's own settings file (installed mode), top-level keys
INSTALLED_STATE_DIR = ".skillbuild"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _file_layers(home: Path | None, pyproject: Path, raw: dict[str, tuple[str, Any]]) -> None:
    """The settings files: the checkout's pyproject.toml; in installed mode (`home`: the marketplace root) the
    installed defaults, then the marketplace's pyproject.toml [tool.skillbuild], then its .skillbuild.toml."""
    if home is None:
        _layer(f"{pyproject.name} [tool.skillbuild]", _read_pyproject(pyproject), raw)
        return
    _layer("installed default", {"marketplace": str(home), "state_dir": INSTALLED_STATE_DIR}, raw)
    _layer(f"{home / 'pyproject.toml'} [tool.skillbuild]", _read_pyproject(home / "pyproject.toml"), raw)
    _layer(str(home / LOCAL_SETTINGS), _read_toml(home / LOCAL_SETTINGS), raw)


def _apply_state_dir(raw: dict[str, tuple[str, Any]]) -> None:
    """state_dir gives cache_root and build_root their defaults; either one set explicitly still wins."""
    source, state_dir = raw.get("state_dir", ("default", None))
    if not state_dir:
        return
    for key, sub in (("cache_root", "cache"), ("build_root", "build")):
        raw.setdefault(key, (f"state_dir ({source})", str(Path(str(state_dir)) / sub)))


def load_settings(
    cli: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    pyproject: Path | None = None,
    project_root: Path = PROJECT_ROOT,
    home: Path | None = None,
) -> Settings:
    """Resolve settings from the layers; raise ConfigError naming any bad key or value.

    `home`: the marketplace root when run as the installed `skillbuild` command; relative paths then resolve
    against it and state defaults to <home>/.skillbuild. None: the checkout's `doit` (state in its build/, cache/).
    """
    env = os.environ if env is None else env
    project_root = home or project_root
    pyproject = pyproject or project_root / "pyproject.toml"
    raw: dict[str, tuple[str, Any]] = {}
    _file_layers(home, pyproject, raw)
    _check_env_names(env)
    _layer("environment", _env_values(env), raw)
    _layer("command line", {k: v for k, v in (cli or {}).items() if k not in TASK_ARGS}, raw)
    _apply_state_dir(raw)
    values, sources = {}, {}
    for key, spec in KEYS.items():
        source, value = raw.get(key, ("default", spec.default))
        try:
            values[key] = spec.parse(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: setting '{key}' = {value!r} is invalid: {exc}") from None
        sources[key] = source
    settings = Settings(values, sources, project_root)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    if settings.max_bytes < settings.min_bytes or settings.max_bytes < settings.offline_min_bytes:
        raise ConfigError("settings 'max_bytes' must be at least 'min_bytes' and 'offline_min_bytes'")
    if "{name}" not in settings.skill_path or not settings.skill_path.endswith("SKILL.md"):
        raise ConfigError("setting 'skill_path' must contain {name} and end with SKILL.md, "
                          "e.g. skills/{name}/SKILL.md")
    if settings.backup_chunk_size > 4 << 20:
        raise ConfigError("setting 'backup_chunk_size' must be at most 4194304 (4 MiB): a libSQL server "
                          "refuses rows over 5,000,000 bytes")
    if settings.model.strip() == "gemini-2.0-flash":
        raise ConfigError("setting 'model': gemini-2.0-flash is retired on Vertex AI; use e.g. gemini-2.5-flash")
