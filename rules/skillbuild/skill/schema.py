"""The analysis JSON Schema: loaded once, checked here for every provider and the batch path."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


@lru_cache(maxsize=None)
def analysis_schema() -> dict:
    return json.loads((SCHEMAS_DIR / "analysis.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():
    import jsonschema  # deferred: loading tasks must stay fast

    return jsonschema.Draft202012Validator(analysis_schema())


def schema_errors(analysis: object) -> list[str]:
    """Every way `analysis` breaks the schema, as 'path: message' lines (empty when it is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(_validator().iter_errors(analysis), key=str)]


def best_error(analysis: object) -> str | None:
    """The most relevant schema error, for a repair message; None when valid."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(analysis))
    if error is None:
        return None
    return f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message[:200]}"
