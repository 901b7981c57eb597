"""The work behind each task: analyse (phase 1) and generate-validate-write (phase 2).

Actions return `TaskFailed` with a reason a maintainer can act on; a failed or invalid generation is
kept under cache/<m>/rejected/ and never touches the working file.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from doit.exceptions import TaskFailed

from rules import __version__, discovery, skillmd, validation, writing
from rules.discovery import Plugin
from rules.fingerprints import files_hash, text_hash
from rules.providers import ProviderError, make_provider

SCHEMAS = Path(__file__).parent / "schemas"


def prompt_path(settings, phase: str) -> Path:
    """Prompts are files; their bytes are their version."""
    path = settings.prompts_dir / f"{phase}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} is missing; restore it or set prompts_dir")
    return path


def read_prompt(settings, phase: str) -> str:
    return prompt_path(settings, phase).read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def analysis_schema() -> dict:
    return json.loads((SCHEMAS / "analysis.schema.json").read_text(encoding="utf-8"))


def schema_errors(analysis: object) -> list[str]:
    import jsonschema  # deferred: loading tasks must stay fast

    validator = jsonschema.Draft202012Validator(analysis_schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(analysis), key=str)]


def analysis_path(settings, plugin: Plugin) -> Path:
    return settings.analysis_dir / f"{plugin.key}.json"


def source_hash(plugin: Plugin) -> str:
    """Inputs' names and contents plus script names: what the SKILL.md was made from."""
    assert plugin.path is not None
    digest = files_hash(plugin.inputs, plugin.path)
    return text_hash(digest + "\n" + "\n".join(plugin.scripts))


def provenance_fields(settings, plugin: Plugin, provider_name: str, model: str) -> dict[str, str]:
    return {
        "generator": f"skillbuild-{provider_name}",
        "generator-version": __version__,
        "model": model,
        "source-hash": source_hash(plugin)[:16],
        "analysis-prompt": text_hash(read_prompt(settings, "analysis"))[:16],
        "generation-prompt": text_hash(read_prompt(settings, "generation"))[:16],
    }


def _context(settings, plugin: Plugin):
    return discovery.plugin_context(plugin, settings.input_file_budget, settings.input_total_budget)


def _keep_rejected(settings, plugin: Plugin, name: str, text: str, reasons: list[str]) -> Path:
    """Keep a rejected output for inspection: cache/<m>/rejected/<plugin>.<name> plus its reasons."""
    path = settings.rejected_dir / f"{plugin.key}.{name}"
    writing.atomic_write(path, text)
    writing.atomic_write(settings.rejected_dir / f"{plugin.key}.{name}.reasons.txt", "\n".join(reasons) + "\n")
    return path


def analyse(settings, plugin: Plugin) -> TaskFailed | None:
    """Phase 1: provider analysis, schema-checked, saved as cache/<m>/analysis/<plugin>.json."""
    provider = make_provider(settings)
    try:
        result = provider.analyse(_context(settings, plugin), read_prompt(settings, "analysis"))
    except ProviderError as exc:
        return TaskFailed(f"{plugin.name}: analysis failed ({exc.kind}): {exc}")
    errors = schema_errors(result.value)
    if errors:
        kept = _keep_rejected(settings, plugin, "analysis.json",
                              json.dumps(result.value, indent=2, default=str), errors)
        return TaskFailed(f"{plugin.name}: analysis does not match the schema ({'; '.join(errors[:3])}); "
                          f"kept at {kept}")
    writing.atomic_write(analysis_path(settings, plugin),
                         json.dumps(result.value, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return None


def gate(settings, plugin: Plugin, provider_name: str, text: str) -> list[str]:
    low, high = settings.gate_bounds(provider_name)
    return validation.check_skill(text, plugin.key, min_bytes=low, max_bytes=high,
                                  max_body_lines=settings.max_body_lines,
                                  commands=plugin.commands, agents=plugin.agents)


def _load_analysis(settings, plugin: Plugin) -> dict:
    data = json.loads(analysis_path(settings, plugin).read_text(encoding="utf-8"))
    errors = schema_errors(data)
    if errors:
        raise ValueError(f"{analysis_path(settings, plugin)} does not match the schema: {'; '.join(errors[:3])}; "
                         "run `doit clean` and build again")
    return data


def generate_checked(settings, plugin: Plugin, provider, analysis: dict) -> tuple[str, list[str]]:
    """Generate, gate, and (where the provider can) repair once with the gate's reasons."""
    context = _context(settings, plugin)
    prompt = read_prompt(settings, "generation")
    candidate = provider.generate(context, analysis, prompt).value
    reasons = gate(settings, plugin, provider.name, candidate)
    if reasons and getattr(provider, "can_repair", True):
        candidate = provider.generate(context, analysis, prompt, feedback=reasons).value
        reasons = gate(settings, plugin, provider.name, candidate)
    if not reasons:
        candidate = skillmd.with_provenance(candidate, provenance_fields(settings, plugin, provider.name,
                                                                         provider.model))
        reasons = gate(settings, plugin, provider.name, candidate)
    return candidate, reasons


def build_skill(settings, plugin: Plugin, run_id: str) -> TaskFailed | None:
    """Phase 2: generate, pass the gates, back up the old file, write atomically."""
    assert plugin.target is not None and plugin.path is not None
    provider = make_provider(settings)
    try:
        analysis = _load_analysis(settings, plugin)
        candidate, reasons = generate_checked(settings, plugin, provider, analysis)
    except ProviderError as exc:
        return TaskFailed(f"{plugin.name}: generation failed ({exc.kind}): {exc}; {plugin.target} is unchanged")
    except ValueError as exc:
        return TaskFailed(f"{plugin.name}: {exc}")
    if reasons:
        kept = _keep_rejected(settings, plugin, "SKILL.md", candidate, reasons)
        return TaskFailed(f"{plugin.name}: SKILL.md rejected by the gates: {'; '.join(reasons)}. "
                          f"Candidate kept at {kept}; {plugin.target} is unchanged")
    writing.write_with_backup(plugin.target, candidate, settings.build_dir / "backups", run_id, plugin.key,
                              plugin.relpath(plugin.target))
    return None


def fail(reason: str) -> TaskFailed:
    return TaskFailed(reason)
