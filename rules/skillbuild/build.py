"""The work behind each task: analyse (phase 1), generate-validate-write (phase 2), keep, skip, restore.

Every outcome lands in the audit DB, failures included. Actions return `TaskFailed` with a reason a
maintainer can act on, or a dict of events for the run's progress output. A failed or invalid generation
is kept under cache/<m>/rejected/ and never touches the working file. A hand-written SKILL.md at the target
is the first input of both phases, its replacement must pass the never-worse gate, and the frontmatter keys
skillbuild does not write are carried over from it verbatim.
"""
from __future__ import annotations

import functools
import json
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from doit.exceptions import TaskFailed

from skillbuild import __version__, discovery
from skillbuild.safety import backup
from skillbuild.skill import inputs, neverworse, references, safety, skillmd, validation
from skillbuild.skill import secrets as credentials
from skillbuild.skill.schema import analysis_schema, schema_errors  # noqa: F401  (re-exported)
from skillbuild.store import writing
from skillbuild.store.audit import AuditDB, AuditError
from skillbuild.discovery import Plugin
from skillbuild.fingerprints import canonical_hash, files_hash, text_hash
from skillbuild.memo import stat_key
from skillbuild.calls import Caller, caller_for, spend
from skillbuild.calls.throttle import StateDBError
from skillbuild.providers import ProviderError
from skillbuild.providers.base import Result, Usage

def prompt_path(settings, phase: str) -> Path:
    """Prompts are files; their bytes are their version."""
    path = settings.prompts_dir / f"{phase}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} is missing; restore it or set prompts_dir")
    return path


def read_prompt(settings, phase: str) -> str:
    return prompt_path(settings, phase).read_text(encoding="utf-8")


def analysis_path(settings, plugin: Plugin) -> Path:
    return settings.analysis_dir / f"{plugin.key}.json"


def saved_original_path(settings, plugin: Plugin) -> Path:
    """Where the hand-written SKILL.md a build replaced is kept: it stays the input, the never-worse
    reference and the source of carried frontmatter keys for every later rebuild of the plugin."""
    return settings.originals_dir / f"{plugin.key}.SKILL.md"


def original_text(settings, plugin: Plugin) -> str | None:
    """The hand-written SKILL.md a new one must never be worse than: the one at the target, else the one
    an earlier build replaced (so a rebuild, even one redone after a killed run, sends the same requests)."""
    text = skillmd.read_hand_written(plugin.target)
    if text is not None:
        return text
    saved = saved_original_path(settings, plugin)
    return saved.read_text(encoding="utf-8") if saved.is_file() else None


def secrets(settings) -> list[str]:
    """Values that must never be stored or printed: redacted wherever text is recorded."""
    import os

    return [v for v in (settings.vertex_token, os.environ.get(settings.turso_token_env)) if v]


_AUDITS: dict[tuple, AuditDB] = {}


def open_audit(settings) -> AuditDB:
    """One AuditDB per process and DB (it reopens its connection itself after a fork): every row of a run
    goes through it, so a connection, its pragmas and the migration check are paid once, not per row."""
    key = (str(settings.audit_db), tuple(secrets(settings)))
    if key not in _AUDITS:
        _AUDITS[key] = AuditDB(settings.audit_db, secrets=secrets(settings))
    return _AUDITS[key]


def source_hash(plugin: Plugin) -> str:
    """Inputs' names and contents plus script names: what the SKILL.md was made from."""
    assert plugin.path is not None
    digest = files_hash(plugin.inputs, plugin.path)
    return text_hash(digest + "\n" + "\n".join(plugin.scripts))


def settings_hash(settings, provider_name: str) -> str:
    """The settings a SKILL.md is made and gated under: a change of one makes every SKILL.md stale."""
    low, high = settings.gate_bounds(provider_name)
    return canonical_hash({"bounds": f"{low}-{high}", **settings.fingerprint(
        "skill_path", "max_body_lines", "input_file_budget", "input_total_budget", "per_item_min_bytes",
        "max_body_tokens", "max_reference_bytes")})[:16]


def provenance_fields(settings, plugin: Plugin, provider_name: str, model: str) -> dict[str, str]:
    common = _common_fields(settings, provider_name, model)
    return {"generator": f"skillbuild-{provider_name}", "generator-version": __version__, "model": model,
            "source-hash": source_hash(plugin)[:16], **common}


_COMMON: dict[tuple, tuple[Any, tuple[str, ...], tuple, dict[str, str]]] = {}  # keeps its settings: no id reused
PROMPT_PHASES = ("analysis", "generation")


def _common_fields(settings, provider_name: str, model: str) -> dict[str, str]:
    """The provenance every plugin shares: worked out once per run while the prompt files stay the same
    (every plugin's up-to-date check asks for it: two stats, no path built)."""
    key = (id(settings), provider_name, model)
    kept = _COMMON.get(key)
    if kept is not None and tuple(stat_key(name) for name in kept[1]) == kept[2]:
        return kept[3]
    files = tuple(str(prompt_path(settings, phase)) for phase in PROMPT_PHASES)
    stats = tuple(stat_key(name) for name in files)  # before reading: an edit meanwhile is read next time
    fields = {"analysis-prompt": text_hash(read_prompt(settings, "analysis"))[:16],
              "generation-prompt": text_hash(read_prompt(settings, "generation"))[:16],
              "settings": settings_hash(settings, provider_name)}
    _COMMON[key] = settings, files, stats, fields
    return fields


def expected_provenance(settings) -> Callable[[Plugin], dict[str, str]]:
    """What a current SKILL.md of each plugin would carry: `doit status` and `doit plan` compare against it."""
    return lambda plugin: provenance_fields(settings, plugin, settings.provider, settings.model_id)


def prepared_context(settings, plugin: Plugin, original: str | None = None):
    """(PluginContext, values redacted): the inputs as every provider sees them, the hand-written original
    first, comments stripped and secrets redacted; `doit plan` computes its cache keys from the same.
    `original`: the hand-written SKILL.md, when the caller read it already (`original_text` otherwise)."""
    original = original if original is not None else original_text(settings, plugin)
    raw = discovery.plugin_context(plugin, settings.input_file_budget, settings.input_total_budget, original)
    skill_dir = plugin.relpath(plugin.target.parent) if plugin.target and plugin.path else ""
    return inputs.prepare(raw, plugin.path, skill_dir)


def _keep_rejected(settings, plugin: Plugin, name: str, text: str, reasons: list[str]) -> Path:
    """Keep a rejected output for inspection: cache/<m>/rejected/<plugin>.<name> plus its reasons, redacted
    (a candidate may repeat a credential; the kept copy never does)."""
    path = settings.rejected_dir / f"{plugin.key}.{name}"
    writing.atomic_write(path, credentials.redact(text, secrets(settings)))
    writing.atomic_write(settings.rejected_dir / f"{plugin.key}.{name}.reasons.txt",
                         credentials.redact("\n".join(reasons), secrets(settings)) + "\n")
    return path


class AuditAttempts:
    """The call path's attempt recorder for one step: each HTTP attempt is an `api_calls` row written before its
    request leaves (outcome `sent`) and completed once answered, so a billed call is on record even when the run
    is killed with it in flight (the next run marks it `unknown`, possibly billed)."""

    def __init__(self, settings, run_id: str, plugin: str, phase: str):
        self.settings, self.run_id, self.plugin, self.phase = settings, run_id, plugin, phase

    def sent(self, record: dict) -> None:
        record["audit_id"] = open_audit(self.settings).begin_attempt(self.run_id, self.plugin, self.phase, record)

    def done(self, record: dict) -> None:
        open_audit(self.settings).finish_attempt(record["audit_id"], record)


class Step:
    """One provider call of one phase, timed and written to the audit DB (with its HTTP attempts)."""

    def __init__(self, settings, plugin: Plugin, run_id: str, phase: str, caller: Caller, prompt: str):
        self.settings, self.plugin, self.run_id, self.phase = settings, plugin, run_id, phase
        self.caller, self.prompt = caller, prompt
        caller.recorder = AuditAttempts(settings, run_id, plugin.key, phase)
        self.redacted: int | None = None  # values redacted from this step's inputs
        self.usage = Usage()
        self.started = time.monotonic()

    def call(self, fn: Callable[[], Result]) -> Result:
        """Run the provider call; a ProviderError is recorded as this step's failure and re-raised."""
        try:
            result = fn()
        except ProviderError as exc:
            self.usage = exc.usage
            self.record("failure", error_class=exc.kind, error_message=str(exc))
            raise
        except Exception as exc:  # the throttle's QuotaExhausted and other stops: recorded, then raised
            self.record("failure", error_class=_write_class(exc), error_message=str(exc))
            raise
        self.usage = result.usage
        return result

    def record(self, status: str, output: str | None = None, **fields: Any) -> dict:
        seconds = time.monotonic() - self.started
        audit = open_audit(self.settings)
        audit.record(
            self.run_id, self.plugin.key, self.plugin.rel, self.phase, status,
            provider=self.caller.name, model=self.caller.model, prompt_hash=text_hash(self.prompt)[:16],
            input_hash=source_hash(self.plugin)[:16], processing_time_seconds=round(seconds, 3),
            input_tokens=self.usage.input_tokens, output_tokens=self.usage.output_tokens,
            attempts=len(self.usage.attempts) or self.usage.calls,
            output_hash=text_hash(output)[:16] if output is not None else None,
            output_bytes=len(output.encode()) if output is not None else None,
            redacted_count=self.redacted, **fields)
        audit.record_api_calls(self.run_id, self.plugin.key, self.phase, self.usage.attempts)
        return {"phase": self.phase, "outcome": status, "seconds": round(seconds, 3), "calls": self.usage.calls,
                "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
                "reason": fields.get("error_message")}


def _write_class(exc: BaseException) -> str:
    """The audit's error_class of a failed write: `disk_full` when there was no room."""
    return "disk_full" if writing.no_room(exc) else type(exc).__name__


def plugin_action(phase: str):
    """A per-plugin action that never ends in a traceback for a write the disk refused: a state file (the audit
    DB, a log, the analysis, a kept candidate) that cannot be written fails that plugin with one line naming
    it, recorded when the audit DB can still take it; the other plugins go on."""
    def wrap(action: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(action)
        def run(settings, plugin: Plugin, *args: Any) -> Any:
            try:
                return action(settings, plugin, *args)
            except (OSError, sqlite3.Error, AuditError, StateDBError) as exc:
                why = _unwritten(settings, exc)
                _record_quietly(settings, plugin, args[0] if args else None, phase, exc, why)
                return TaskFailed(f"{plugin.name}: {phase} failed: {why}")

        return run

    return wrap


def _unwritten(settings, exc: BaseException) -> str:
    if isinstance(exc, StateDBError):  # names its file already
        return str(exc)
    if isinstance(exc, AuditError):
        return str(exc).split(". Check ")[0]
    if isinstance(exc, sqlite3.Error):  # the audit DB (or the throttle DB beside it) in the build folder
        return writing.write_failure(exc, settings.build_root)
    return writing.write_failure(exc)


def _record_quietly(settings, plugin: Plugin, run_id: Any, phase: str, exc: BaseException, why: str) -> None:
    """The failure's audit row, when the audit DB can still take one (it may be what failed)."""
    if not isinstance(run_id, str):
        return
    try:
        open_audit(settings).record(run_id, plugin.key, plugin.rel or None, phase, "failure",
                                    error_class=_write_class(exc), error_message=why)
    except (OSError, sqlite3.Error, AuditError):
        pass


def _stopped(plugin: Plugin, phase: str, exc: Exception, settings=None) -> TaskFailed:
    if settings is not None and isinstance(exc, (OSError, sqlite3.Error, AuditError)):
        return TaskFailed(f"{plugin.name}: {phase} failed: {_unwritten(settings, exc)}")  # a full disk, in one line
    kind = getattr(exc, "kind", type(exc).__name__)
    return TaskFailed(f"{plugin.name}: {phase} failed ({kind}): {exc}")


@plugin_action("analyse")
def analyse(settings, plugin: Plugin, run_id: str) -> TaskFailed | dict:
    """Phase 1: analysis through the call path, schema-checked, saved as cache/<m>/analysis/<plugin>.json."""
    stop = spend.stop_reason(settings, run_id)
    if stop:
        return TaskFailed(f"{plugin.name}: {stop}")
    caller = caller_for(settings)
    prompt = read_prompt(settings, "analysis")
    step = Step(settings, plugin, run_id, "analyse", caller, prompt)
    try:
        context, step.redacted = prepared_context(settings, plugin)
        result = step.call(lambda: caller.analyse(context, prompt))
    except Exception as exc:  # recorded by the step
        return _stopped(plugin, "analysis", exc, settings)
    text = json.dumps(result.value, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n"
    errors = schema_errors(result.value)
    if errors:
        kept = _keep_rejected(settings, plugin, "analysis.json", text, errors)
        step.record("failure", text, error_class="schema", error_message="; ".join(errors[:5]))
        return TaskFailed(f"{plugin.name}: analysis does not match the schema ({'; '.join(errors[:3])}); "
                          f"kept at {kept}")
    try:
        writing.atomic_write(analysis_path(settings, plugin), text)
    except OSError as exc:  # the answer is paid and in the response cache (or spilled): only this file is missing
        why = writing.write_failure(exc, analysis_path(settings, plugin))
        step.record("failure", text, error_class=_write_class(exc), error_message=why)
        return TaskFailed(f"{plugin.name}: analysis not saved: {why}; its answer is kept, a rerun pays nothing")
    return step.record("success", text)


def gate(settings, plugin: Plugin, provider_name: str, text: str, original: str | None = None,
         files: dict[str, str] | None = None) -> list[str]:
    """Every reason `text` (and its reference `files`, {"references/x.md": text}) may not be written.
    `original`: the hand-written SKILL.md it would replace (read from the target, or the one an earlier build
    replaced, when not given)."""
    assert plugin.path is not None and plugin.target is not None
    original = original if original is not None else original_text(settings, plugin)
    files = files or {}
    low, high = settings.gate_bounds(provider_name, len(plugin.commands) + len(plugin.agents))
    rels = [plugin.relpath(p) for p in plugin.inputs]
    own = [(rel, p.read_text(encoding="utf-8", errors="replace")) for rel, p in zip(rels, plugin.inputs)
           if rel.startswith("skills/") and p.name == "SKILL.md"]
    commands = {*plugin.commands, *validation.skill_commands(own), plugin.key}
    namespaces = {plugin.name, plugin.key, str(plugin.manifest.get("name") or plugin.name)}
    vouchers = safety.vouchers_on_disk(plugin.path, rels + list(plugin.scripts), plugin.manifest)
    if original:
        vouchers.add(original)  # the maintainer's own skill: its commands and hosts are already theirs to run
    reasons = validation.check_skill(
        text, plugin.key, min_bytes=low, max_bytes=high, max_body_lines=settings.max_body_lines,
        commands=sorted(commands), agents=plugin.agents, namespaces=sorted(namespaces),
        original=_frontmatter(original), carried=tuple(skillmd.carried_keys(original)) if original else (),
        vouchers=vouchers, skill_dir=plugin.target.parent, max_body_tokens=settings.max_body_tokens,
        pending=sorted(files))
    for rel, body in sorted(files.items()):
        reasons += validation.check_reference(
            rel, body, max_bytes=settings.max_reference_bytes, commands=sorted(commands), agents=plugin.agents,
            namespaces=sorted(namespaces | {plugin.key}), vouchers=vouchers, skill_dir=plugin.target.parent,
            pending=sorted(files))
    if original is not None:
        reasons += neverworse.check(original, text, commands=set(plugin.commands), folder=plugin.target.parent,
                                    reference_bytes=references.bytes_of(files))
    return reasons


def _frontmatter(original: str | None) -> dict | None:
    """The hand-written file's frontmatter, or None (no original, or one that does not parse)."""
    if not original:
        return None
    try:
        return skillmd.parse(original)[0]
    except skillmd.FrontmatterError:
        return None


def _original_metadata(original: str | None) -> dict[str, str]:
    """The hand-written file's own `metadata` entries: kept in the new file (our provenance wins)."""
    found = (_frontmatter(original) or {}).get("metadata")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _load_analysis(settings, plugin: Plugin) -> dict:
    data = json.loads(analysis_path(settings, plugin).read_text(encoding="utf-8"))
    errors = schema_errors(data)
    if errors:
        raise ValueError(f"{analysis_path(settings, plugin)} does not match the schema: {'; '.join(errors[:3])}; "
                         "run `doit clean` and build again")
    return data


def _candidate(settings, plugin: Plugin, caller: Caller, step: Step, make: Callable[[], Result],
               original: str | None = None) -> tuple[str, dict[str, str], list[str]]:
    """One generation (or repair) call, gated (see `gated`)."""
    return gated(settings, plugin, caller, step.call(make), original)


def gated(settings, plugin: Plugin, caller: Caller, answer: Result,
          original: str | None = None) -> tuple[str, dict[str, str], list[str]]:
    """A provider's answer with the original's own frontmatter keys carried over, gated with its reference files,
    and the gates' reasons (the repair's feedback: retention.py computes a repair's cache key from them);
    provenance (naming each reference file with its hash) is added only to one that passed."""
    carried = skillmd.carried_keys(original) if original else {}
    text, files = skillmd.carry_over(answer.value, carried), dict(answer.files)
    reasons = gate(settings, plugin, caller.name, text, original, files)
    if not reasons:
        fields = {**_original_metadata(original), **provenance_fields(settings, plugin, caller.name, caller.model)}
        fields.pop(references.FIELD, None)
        if files:
            fields[references.FIELD] = references.field_value(files)
        text = skillmd.with_provenance(text, fields, carried)
        reasons = gate(settings, plugin, caller.name, text, original, files)
    return text, files, reasons


def _carried_note(original: str | None) -> str | None:
    """The console and log line naming the keys that came from the original, not from the model."""
    carried = skillmd.carried_keys(original) if original else {}
    return f"kept from the original: {', '.join(carried)}" if carried else None


@plugin_action("generate")
def build_skill(settings, plugin: Plugin, run_id: str) -> TaskFailed | dict:
    """Phase 2: generate, pass the gates (one repair with the reasons), back up, write atomically."""
    assert plugin.target is not None and plugin.path is not None
    stop = spend.stop_reason(settings, run_id)
    if stop:
        return TaskFailed(f"{plugin.name}: {stop}")
    caller = caller_for(settings)
    try:
        return _build_skill(settings, plugin, run_id, caller)
    finally:
        caller.plugin_done()  # the throttle's optional rest every N plugins


def _build_skill(settings, plugin: Plugin, run_id: str, caller: Caller) -> TaskFailed | dict:
    """The repair is decided here, not in a provider: it needs the gates' reasons and an audit row per call."""
    prompt = read_prompt(settings, "generation")
    original = original_text(settings, plugin)  # read before anything is written
    events: list[dict] = []
    step = Step(settings, plugin, run_id, "generate", caller, prompt)
    try:
        context, redacted = prepared_context(settings, plugin, original)
        step.redacted = redacted
        analysis = _load_analysis(settings, plugin)
        text, files, reasons = _candidate(settings, plugin, caller, step,
                                          lambda: caller.generate(context, analysis, prompt), original)
        if reasons and caller.can_repair:
            events.append(step.record("failure", text, error_class="gate", error_message="; ".join(reasons)))
            step = Step(settings, plugin, run_id, "repair", caller, prompt)
            step.redacted = redacted
            text, files, reasons = _candidate(settings, plugin, caller, step,
                                              lambda: caller.generate(context, analysis, prompt, feedback=reasons),
                                              original)
    except (ValueError, OSError) as exc:
        step.record("failure", error_class=_write_class(exc), error_message=str(exc))
        return _stopped(plugin, "generation", exc, settings)
    except Exception as exc:  # recorded by the step
        return _stopped(plugin, step.phase, exc, settings)
    if reasons:
        kept = _keep_rejected(settings, plugin, "SKILL.md", references.join(text, files), reasons)
        step.record("failure", text, error_class="gate", error_message="; ".join(reasons))
        return TaskFailed(f"{plugin.name}: SKILL.md rejected by the gates: {'; '.join(reasons)}. "
                          f"Candidate kept at {kept}; {plugin.target} is unchanged")
    try:
        saved = _write(settings, plugin, run_id, text, files)
    except (OSError, backup.BackupError) as exc:
        step.record("failure", text, error_class=type(exc).__name__, error_message=str(exc))
        why = writing.write_failure(exc) if isinstance(exc, OSError) and writing.no_room(exc) else exc
        return TaskFailed(f"{plugin.name}: writing {plugin.target} failed: {why}; the file is unchanged")
    done = step.record("success", text, backup_path=str(saved))
    done["reason"] = _carried_note(original)
    events.append(done)
    return {"events": events}


def _write(settings, plugin: Plugin, run_id: str, text: str, files: dict[str, str] | None = None) -> Path:
    """Back up the whole plugin folder (verified), keep a hand-written file being replaced as the plugin's
    original, write the reference files then the SKILL.md atomically, remove the reference files the previous
    SKILL.md recorded and this one no longer writes (they are in the backup just made), prune old backups."""
    assert plugin.path is not None and plugin.target is not None
    saved = backup.backup_plugin(settings.backups_dir, run_id, plugin.key, plugin.path, journal=settings.journal())
    replaced = skillmd.read_hand_written(plugin.target)
    if replaced is not None:
        writing.atomic_write(saved_original_path(settings, plugin), replaced)
    folder = plugin.target.parent
    previous = skillmd.provenance(plugin.target.read_text(encoding="utf-8", errors="replace")) \
        if plugin.target.is_file() else None
    for rel, body in sorted((files or {}).items()):
        writing.atomic_write(folder / rel, body)
    writing.atomic_write(plugin.target, text)  # last: its provenance names the files above
    for rel in references.stale(previous, files or {}):
        (folder / rel).unlink(missing_ok=True)
    backup.prune(settings.backups_dir, plugin.key, settings.backup_keep, settings.backup_keep_bytes)
    return saved


@plugin_action("keep")
def keep(settings, plugin: Plugin, run_id: str, why: str = "") -> dict:
    """A hand-written SKILL.md kept as it is (`why`: status.keep_reason): recorded once per change, no API call."""
    assert plugin.target is not None
    size = plugin.target.stat().st_size
    open_audit(settings).record(run_id, plugin.key, plugin.rel, "keep", "kept", output_bytes=size,
                                output_hash=text_hash(plugin.target.read_bytes())[:16], error_message=why or None)
    return {"phase": "keep", "outcome": "kept", "reason": why or f"hand-written, {size} bytes"}


@plugin_action("skip")
def skip(settings, plugin: Plugin, run_id: str) -> dict:
    """An external source: nothing to build here, recorded once per change of the reason."""
    open_audit(settings).record(run_id, plugin.key, plugin.rel, "skip", "skipped", error_message=plugin.reason)
    return {"phase": "skip", "outcome": "skipped", "reason": plugin.reason}


@plugin_action("analyse")
def fail(settings, plugin: Plugin, run_id: str) -> TaskFailed:
    """Bad input found by discovery: recorded as the plugin's failure; the other plugins still build."""
    open_audit(settings).record(run_id, plugin.key, plugin.rel or None, "analyse", "failure",
                                error_class="input", error_message=plugin.reason)
    return TaskFailed(plugin.reason)


def fail_plain(reason: str) -> TaskFailed:
    return TaskFailed(reason)


@plugin_action("restore")
def restore(settings, plugin: Plugin, run_id: str, at: str | None) -> TaskFailed | dict:
    """Put a plugin's files back from a backup, verified, and record it."""
    assert plugin.path is not None
    started = time.monotonic()
    audit = open_audit(settings)
    try:
        result = backup.restore_plugin(settings.backups_dir, plugin.key, plugin.path, at_run=at, run_id=run_id,
                                       journal=settings.journal())
    except (backup.BackupError, OSError) as exc:
        audit.record(run_id, plugin.key, plugin.rel, "restore", "failure", error_class=type(exc).__name__,
                     error_message=str(exc))
        return TaskFailed(f"{plugin.name}: restore failed: {exc}")
    seconds = time.monotonic() - started
    audit.record(run_id, plugin.key, plugin.rel, "restore", "success", processing_time_seconds=round(seconds, 3),
                 backup_path=str(result.backup_path))
    print(f"{plugin.name}: restored {result.written} file(s), {result.unchanged} unchanged, {result.removed} "
          f"removed, verified in {seconds:.2f} s; the state before the restore is saved at {result.safety_backup}",
          flush=True)
    return {"phase": "restore", "outcome": "success", "seconds": round(seconds, 3)}


def clean_analysis(settings, plugin: Plugin) -> None:
    """`doit clean analyse:<key>`: the analysis artifact is rebuildable."""
    analysis_path(settings, plugin).unlink(missing_ok=True)


def clean_rejected(settings, plugin: Plugin) -> None:
    """`doit clean`: rejected candidates are rebuildable; SKILL.md files, backups and the audit DB are not touched."""
    for path in settings.rejected_dir.glob(f"{plugin.key}.*"):
        path.unlink()
