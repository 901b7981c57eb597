"""The call path (skillbuild/calls/) with a scripted remote provider, and the boundary providers must keep."""
from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers, whatever the import mode
from vertex_server import sample_plugin  # noqa: E402
from skillbuild import calls  # noqa: E402
from skillbuild.calls import Caller, Retry, cache_key  # noqa: E402
from skillbuild.calls.response_cache import ResponseCache  # noqa: E402
from skillbuild.config import load_settings  # noqa: E402
from skillbuild.providers.base import Failure, Provider, ProviderError, RemoteProvider, Reply, Request  # noqa: E402
from skillbuild.providers.offline import OfflineProvider  # noqa: E402
from skillbuild.testing.fakevertex import analysis_for  # noqa: E402

PACKAGE = Path(calls.__file__).resolve().parents[1]
PLUGIN = sample_plugin()
SKILL = "---\nname: x\ndescription: y\n---\n# X\n"
FORBIDDEN = ("skillbuild.calls", "skillbuild.store.audit", "doit")


# ----------------------------------------------------------------------------- the provider boundary


def imported_modules(source: str) -> set[str]:
    """Every module a source file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def boundary_violations(source: str) -> list[str]:
    return sorted(m for m in imported_modules(source)
                  if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_no_provider_module_imports_the_cache_the_throttle_the_audit_or_doit():
    modules = sorted((PACKAGE / "providers").glob("*.py"))
    assert {m.name for m in modules} >= {"base.py", "offline.py", "vertex.py"}
    for module in modules:
        assert boundary_violations(module.read_text(encoding="utf-8")) == [], module.name


def test_the_boundary_check_sees_every_form_of_import():
    source = ("import doit.exceptions\nfrom skillbuild.calls import throttle\nimport json\n"
              "def f():\n    from skillbuild.store import audit\n    from skillbuild.store.writing import x\n")
    assert boundary_violations(source) == ["doit.exceptions", "skillbuild.calls", "skillbuild.calls.throttle",
                                           "skillbuild.store.audit"]


CAPABILITIES = {"can_repair", "is_remote", "has_cache_key", "can_batch"}


def test_capabilities_are_declared_on_the_base_class_and_never_probed():
    assert all(hasattr(Provider, name) for name in CAPABILITIES)
    assert (OfflineProvider.is_remote, OfflineProvider.can_repair, OfflineProvider.can_batch) == (False, False, False)
    from skillbuild.providers.vertex import VertexProvider

    assert (VertexProvider.is_remote, VertexProvider.has_cache_key, VertexProvider.can_repair,
            VertexProvider.can_batch) == (True, True, True, True)  # batch prediction: providers/vertex_batch.py
    for module in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr"):
                names = {a.value for a in node.args[1:2] if isinstance(a, ast.Constant)}
                assert not names & CAPABILITIES, f"{module.name}:{node.lineno} probes a capability"


# ----------------------------------------------------------------------------- a scripted remote provider


class Boom(Exception):
    """What the scripted provider's "SDK" raises."""

    def __init__(self, failure: Failure):
        super().__init__(failure.error)
        self.failure = failure


def http(status: int, retry_after: float | None = None) -> Boom:
    return Boom(Failure("http", f"HTTP {status}", "scripted", status, retry_after))


class Scripted(RemoteProvider):
    """A remote provider whose attempts answer from a script: a Reply, or an exception to raise."""

    name, model, max_output_ceiling = "scripted", "scripted-1", 1000

    def __init__(self, *script):
        self.script, self.sent = list(script), []

    def _request(self, message: str, max_tokens: int = 100) -> Request:
        return Request(self.model, "prompt", message, {"max_output_tokens": max_tokens}, max_tokens)

    def analysis_request(self, plugin, prompt):
        return self._request(f"analyse {plugin.name}")

    def generation_request(self, plugin, analysis, prompt, feedback=None):
        return self._request(f"generate {plugin.name} {feedback or ''}")

    def with_max_tokens(self, request, budget):
        return self._request(request.message, budget)

    def connect(self):
        return None

    def send(self, request, on_sent=None):
        self.sent.append(request)
        if on_sent:
            on_sent()
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def failure(self, exc):
        return exc.failure

    def explain(self, failure, calls, seconds):
        return ("quota" if failure.status == 429 else "server"), f"failed after {calls} attempt(s)"


class Pacer:
    def __init__(self):
        self.events: list[tuple] = []

    def acquire(self, est_tokens=0):
        self.events.append(("acquire",))

    def mark_sent(self):
        self.events.append(("sent",))

    def record(self, status, retry_after=None, tokens=0):
        self.events.append(("record", status, retry_after, tokens))

    def plugin_done(self):
        self.events.append(("done",))


def ok(text: str, **fields) -> Reply:
    return Reply(text, "STOP", 10, 20, **fields)


def caller(provider, tmp_path, throttle=None, attempts=4) -> Caller:
    return Caller(provider, cache=ResponseCache(tmp_path / "responses"), throttle=throttle,
                  retry=Retry(attempts, 20.0, backoff_initial=0.01, backoff_max=0.05))


def test_every_attempt_is_paced_recorded_and_the_answer_cached(tmp_path):
    provider, pacer = Scripted(http(503), http(429, retry_after=0.05), ok(SKILL)), Pacer()
    result = caller(provider, tmp_path, pacer).generate(PLUGIN, {}, "prompt")
    assert result.value == SKILL and result.usage.calls == 3 and result.model == "scripted-1"
    assert [a["status"] for a in result.usage.attempts] == [503, 429, 200]
    assert [a["retried"] for a in result.usage.attempts] == [True, True, False]
    assert result.usage.attempts[0]["error"] == "HTTP 503: scripted"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (10, 20)
    assert pacer.events == [("acquire",), ("sent",), ("record", 503, None, 0),
                            ("acquire",), ("sent",), ("record", 429, 0.05, 0),
                            ("acquire",), ("sent",), ("record", 200, None, 30)]
    again = caller(Scripted(), tmp_path).generate(PLUGIN, {}, "prompt")  # no script: any send would fail
    assert (again.value, again.usage.cached, again.usage.calls) == (SKILL, 1, 0)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_errors_that_need_a_fix_are_not_retried(tmp_path, status):
    provider = Scripted(http(status), ok(SKILL))
    with pytest.raises(ProviderError) as failed:
        caller(provider, tmp_path).generate(PLUGIN, {}, "prompt")
    assert failed.value.usage.calls == 1 and len(provider.sent) == 1
    assert str(failed.value) == "failed after 1 attempt(s)", "the provider's message says what to fix"


def test_retries_stop_at_max_attempts(tmp_path):
    provider = Scripted(*[http(500)] * 5)
    with pytest.raises(ProviderError) as failed:
        caller(provider, tmp_path, attempts=3).generate(PLUGIN, {}, "prompt")
    assert failed.value.kind == "server" and failed.value.usage.calls == 3 and len(provider.sent) == 3


def test_max_tokens_gets_one_retry_with_twice_the_budget(tmp_path):
    provider = Scripted(ok("cut", truncated=True), ok(SKILL))
    result = caller(provider, tmp_path).generate(PLUGIN, {}, "prompt")
    assert [r.max_tokens for r in provider.sent] == [100, 200] and result.value == SKILL
    assert result.usage.attempts[0]["error"] == "MAX_TOKENS at 100 tokens; retrying with 200"
    entry = ResponseCache(tmp_path / "responses").get(cache_key(provider.sent[0]))
    assert entry is not None and entry["value"] == SKILL, "stored under the original request's key"


@pytest.mark.parametrize("reply, kind", [(Reply("", None, blocked="SAFETY"), "empty"),
                                         (Reply("no", "SAFETY", refused=True), "safety"),
                                         (Reply("  ", "STOP"), "empty")])
def test_refused_or_empty_answers_fail_clearly(tmp_path, reply, kind):
    with pytest.raises(ProviderError) as failed:
        caller(Scripted(reply), tmp_path).generate(PLUGIN, {}, "prompt")
    assert failed.value.kind == kind and failed.value.usage.calls == 1
    assert not list((tmp_path / "responses").rglob("*.json")), "a failed call stores nothing"


def test_an_invalid_analysis_gets_one_more_call_in_the_call_path(tmp_path):
    valid = analysis_for(dataclasses.asdict(PLUGIN))
    provider = Scripted(ok('{"plugin": '), ok(json.dumps(valid)))
    result = caller(provider, tmp_path).analyse(PLUGIN, "prompt")
    assert result.value == valid and result.usage.calls == 2
    assert result.usage.attempts[0]["retried"] and "invalid JSON" in result.usage.attempts[0]["error"]
    with pytest.raises(ProviderError) as failed:
        caller(Scripted(ok("[]"), ok("{}")), tmp_path / "other").analyse(PLUGIN, "prompt")
    assert failed.value.kind == "invalid_json" and failed.value.usage.calls == 2


def test_a_local_provider_answers_itself_without_cache_or_throttle(tmp_path):
    pacer = Pacer()
    local = Caller(OfflineProvider(), cache=ResponseCache(tmp_path / "responses"), throttle=pacer)
    analysis = local.analyse(PLUGIN, "prompt")
    assert local.generate(PLUGIN, analysis.value, "prompt").value.startswith("---\n")
    assert local.cache is None and pacer.events == [] and not (tmp_path / "responses").exists()
    assert local.can_repair is False and local.cached_analysis(PLUGIN, "prompt") is None


# ----------------------------------------------------------------------------- settings


def settings(tmp_path, **env):
    base = {"SKILLBUILD_BUILD_ROOT": str(tmp_path / "build"), "SKILLBUILD_CACHE_ROOT": str(tmp_path / "cache")}
    return load_settings(env={**base, **env}, pyproject=tmp_path / "absent.toml")


def test_the_model_id_is_decided_in_settings(tmp_path):
    assert settings(tmp_path, SKILLBUILD_PROVIDER="offline").model_id == "extractive-v1"
    vertex = settings(tmp_path, SKILLBUILD_PROVIDER="vertex", SKILLBUILD_MODEL="gemini-2.5-pro",
                      SKILLBUILD_VERTEX_ENDPOINT="http://127.0.0.1:9", SKILLBUILD_VERTEX_TOKEN="t")
    assert vertex.model_id == "gemini-2.5-pro"
    assert calls.caller_for(vertex, paced=False).model == "gemini-2.5-pro"


def test_one_throttle_per_process_for_build_plan_quota_and_check(tmp_path):
    s = settings(tmp_path, SKILLBUILD_PROVIDER="vertex", SKILLBUILD_VERTEX_ENDPOINT="http://127.0.0.1:9",
                 SKILLBUILD_VERTEX_TOKEN="t")
    throttle = calls.throttle_for(s)
    assert throttle.path == tmp_path / "build" / "throttle.sqlite3"
    assert calls.caller_for(s).throttle is throttle
    assert calls.throttle_for(settings(tmp_path, SKILLBUILD_RPM="30")) is not throttle, "other limits, other object"
    with pytest.raises(ValueError, match="rest_seconds"):
        calls.throttle_for(settings(tmp_path / "bad", SKILLBUILD_REST_SECONDS="soon"))
    assert not (tmp_path / "bad").exists(), "a bad setting fails before the throttle DB is made"


def test_cache_keys_are_the_ones_the_provider_computed_before_the_call_path():
    # Keys computed by the Vertex provider before the call path existed: a rerun must still hit every answer
    # it cached. They change only when a request changes (prompt, inputs, schema or generation settings).
    from skillbuild.providers.vertex import VertexProvider

    provider = VertexProvider(model="gemini-2.5-flash", project="p", endpoint="http://x", token="t")
    assert [cache_key(provider.analysis_request(PLUGIN, "A")),
            cache_key(provider.generation_request(PLUGIN, {"a": 1}, "A")),
            cache_key(provider.generation_request(PLUGIN, {"a": 1}, "A", ["r1", "r2"]))] == [
        "388c5a31db21828c22b7dfff5d6a9e7d2f069c771871a7cf59dad3bf93cc4a10",
        "63516aaa01db964f193d0b74db8bbc04b8b8c9657585fad55a207c8f07634456",
        "a854130830fcf41ffbfe064b5ed80a181dd88feee05fb05f50b7db4915495fe9"]
