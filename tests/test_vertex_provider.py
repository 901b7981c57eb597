"""VertexProvider with the real google-genai SDK against the fake Vertex server on loopback."""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers, whatever the import mode
from vertex_server import (PROJECT, TOKEN, fake_vertex, fake_vertex_factory, make_provider,  # noqa: E402, F401
                           sample_plugin)
from skillbuild.skill import validation
from skillbuild.config import load_settings
from skillbuild.providers.base import ProviderError
from skillbuild.skill.schema import analysis_schema
from skillbuild.calls import caller_for, preflight
from skillbuild.providers.vertex import generation_message, vertex_schema

SCHEMA = analysis_schema()
PLUGIN = sample_plugin()
ANALYSIS_PROMPT = "Analyse this plugin."
GENERATION_PROMPT = "Write the SKILL.md."


def gate(text: str) -> list[str]:
    return validation.check_skill(text, PLUGIN.skill_name, min_bytes=8000, max_bytes=14000, max_body_lines=500,
                                  commands=PLUGIN.commands, agents=PLUGIN.agents)


def statuses(usage) -> list:
    return [a["status"] for a in usage.attempts]


def assert_no_token(exc: ProviderError) -> None:
    texts = [str(exc)] + [a["error"] or "" for a in exc.usage.attempts]
    assert all(TOKEN not in t for t in texts), "the bearer token leaked into an error text"


class RecordingThrottle:
    """The throttle interface of skillbuild/calls/throttle.py, recording what the call path tells it."""

    def __init__(self, refuse: bool = False):
        self.acquired: list[int] = []
        self.recorded: list[tuple] = []
        self.refuse = refuse

    def acquire(self, est_tokens: int = 0) -> None:
        if self.refuse:
            raise RuntimeError("daily budget exhausted")
        self.acquired.append(est_tokens)

    def record(self, status, retry_after=None, tokens=0) -> None:
        self.recorded.append((status, retry_after, tokens))

    def mark_sent(self) -> None:
        pass

    def plugin_done(self) -> None:
        pass


# ----------------------------------------------------------------------------- the happy path


def test_analyse_then_generate_end_to_end(fake_vertex, tmp_path):
    provider = make_provider(fake_vertex, tmp_path)
    analysis = provider.analyse(PLUGIN, ANALYSIS_PROMPT)
    jsonschema.validate(analysis.value, SCHEMA)
    assert analysis.model == "gemini-2.5-flash" and analysis.usage.calls == 1 and analysis.usage.cached == 0
    assert analysis.usage.input_tokens > 100 and analysis.usage.output_tokens > 10
    attempt = analysis.usage.attempts[0]
    assert attempt["status"] == 200 and attempt["retried"] is False and attempt["error"] is None
    assert attempt["input_tokens"] == analysis.usage.input_tokens and attempt["latency_s"] >= 0
    assert attempt["time"].endswith("+00:00")

    skill = provider.generate(PLUGIN, analysis.value, GENERATION_PROMPT)
    assert gate(skill.value) == [] and skill.value.endswith("\n") and not skill.value.startswith("\n")
    stats = fake_vertex.stats()
    assert stats["requests_total"] == 2 and stats["by_phase"] == {"analyse": 1, "generate": 1}


def test_repair_call_carries_the_feedback(fake_vertex, tmp_path):
    provider = make_provider(fake_vertex, tmp_path)
    analysis = provider.analyse(PLUGIN, ANALYSIS_PROMPT).value
    reasons = ["size: 1,204 bytes, below the 8,000-byte minimum", "mentions /deploy, which the plugin lacks"]
    message = generation_message(PLUGIN, analysis, reasons)
    assert all(r in message for r in reasons) and "```json skillbuild-feedback" in message
    repaired = provider.generate(PLUGIN, analysis, GENERATION_PROMPT, feedback=reasons)
    assert gate(repaired.value) == [] and repaired.usage.calls == 1
    assert fake_vertex.stats()["repairs"] == 1


def test_response_schema_is_in_the_vertex_dialect():
    converted = vertex_schema(SCHEMA)
    flat = json.dumps(converted)
    assert "$ref" not in flat and "$defs" not in flat and "additionalProperties" not in flat
    assert converted["properties"]["commands"]["items"]["required"] == ["name", "description"]
    assert converted["propertyOrdering"][:2] == ["plugin", "skill_name"]


# ----------------------------------------------------------------------------- the response cache


def test_cache_hit_makes_no_http_call_even_from_a_new_provider(fake_vertex, tmp_path):
    first = make_provider(fake_vertex, tmp_path / "responses")
    analysis = first.analyse(PLUGIN, ANALYSIS_PROMPT)
    skill = first.generate(PLUGIN, analysis.value, GENERATION_PROMPT)
    assert fake_vertex.stats()["requests_total"] == 2

    second = make_provider(fake_vertex, tmp_path / "responses")  # as after a killed run
    again = second.analyse(PLUGIN, ANALYSIS_PROMPT)
    skill_again = second.generate(PLUGIN, again.value, GENERATION_PROMPT)
    assert fake_vertex.stats()["requests_total"] == 2, "a cached key must never call the API"
    assert (again.value, skill_again.value) == (analysis.value, skill.value)
    for usage in (again.usage, skill_again.usage):
        assert (usage.calls, usage.cached, usage.attempts) == (1 - 1, 1, [])

    second.generate(PLUGIN, again.value, GENERATION_PROMPT + " Edited.")  # a prompt edit is a new key
    assert fake_vertex.stats()["requests_total"] == 3


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500), ("503", 503)])
def test_transient_errors_are_retried_then_succeed(fake_vertex_factory, tmp_path, fault, status):
    server = fake_vertex_factory(faults=[f"{fault}:first=2"], retry_delay=0.1)
    throttle = RecordingThrottle()
    result = make_provider(server, tmp_path, throttle=throttle).analyse(PLUGIN, ANALYSIS_PROMPT)
    jsonschema.validate(result.value, SCHEMA)
    assert statuses(result.usage) == [status, status, 200] and result.usage.calls == 3
    assert [a["retried"] for a in result.usage.attempts] == [True, True, False]
    assert all(str(status) in a["error"] for a in result.usage.attempts[:2])
    assert len(throttle.acquired) == 3 and all(t > 0 for t in throttle.acquired)
    assert [r[0] for r in throttle.recorded] == [status, status, 200]
    if status == 429:
        assert throttle.recorded[0][1] == pytest.approx(0.1), "RetryInfo reaches the throttle"
    assert throttle.recorded[2][2] > 0, "tokens of the successful attempt reach the throttle"
    assert server.stats()["requests_total"] == 3


def test_retry_waits_at_least_the_retry_info_delay(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["429:first=2"], retry_delay=0.4)
    began = time.monotonic()
    make_provider(server, tmp_path).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert time.monotonic() - began >= 0.8


def test_hang_is_a_timeout_and_is_retried(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["hang:first=1"], hang_seconds=5.0)
    result = make_provider(server, tmp_path, request_timeout=1.0).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert statuses(result.usage) == [None, 200]
    assert "timeout" in result.usage.attempts[0]["error"].lower() and result.usage.attempts[0]["retried"]
    assert result.usage.attempts[0]["latency_s"] >= 0.9


def test_retries_are_bounded_in_attempts(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["503"])
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path, max_attempts=3).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "server" and failed.value.usage.calls == 3
    assert "3 attempt" in str(failed.value) and server.stats()["requests_total"] == 3
    assert_no_token(failed.value)


def test_retries_are_bounded_in_time(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["429"], retry_delay=1.0)
    began = time.monotonic()
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path, max_attempts=20, retry_max_seconds=1.5).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert time.monotonic() - began < 3.0
    assert failed.value.kind == "quota" and 1 <= failed.value.usage.calls <= 2
    assert "quota" in str(failed.value)


def test_unreachable_endpoint_fails_as_connection(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory()
    url = server.url
    server.stop()
    with pytest.raises(ProviderError) as failed:
        make_provider(url, tmp_path, max_attempts=2).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "connection" and statuses(failed.value.usage) == [None, None]
    assert url in str(failed.value)


def test_throttle_refusal_propagates_without_any_call(fake_vertex, tmp_path):
    with pytest.raises(RuntimeError, match="daily budget"):
        make_provider(fake_vertex, tmp_path, throttle=RecordingThrottle(refuse=True)).analyse(PLUGIN, "x")
    assert fake_vertex.stats()["requests_total"] == 0


# ----------------------------------------------------------------------------- answers that are not usable


def test_invalid_json_is_retried_once_then_fails(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["truncated_json"])
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "invalid_json" and failed.value.usage.calls == 2
    assert server.stats()["requests_total"] == 2 and PLUGIN.name in str(failed.value)
    assert failed.value.usage.attempts[0]["retried"] and "invalid JSON" in failed.value.usage.attempts[0]["error"]


def test_invalid_json_once_then_valid(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["truncated_json:first=1"])
    result = make_provider(server, tmp_path).analyse(PLUGIN, ANALYSIS_PROMPT)
    jsonschema.validate(result.value, SCHEMA)
    assert result.usage.calls == 2


@pytest.mark.parametrize("fault, kind", [("empty_candidates", "empty"), ("safety", "safety")])
def test_blocked_or_empty_answers_fail_without_retry(fake_vertex_factory, tmp_path, fault, kind):
    server = fake_vertex_factory(faults=[fault])
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path).generate(PLUGIN, {}, GENERATION_PROMPT)
    assert failed.value.kind == kind and failed.value.usage.calls == 1
    assert server.stats()["requests_total"] == 1


def test_max_tokens_gets_one_retry_with_a_larger_budget(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["max_tokens:first=1"])
    result = make_provider(server, tmp_path).generate(PLUGIN, {}, GENERATION_PROMPT)
    assert gate(result.value) == [] and result.usage.calls == 2
    budgets = [r["max_output_tokens"] for r in server.stats()["requests"]]
    assert budgets[1] == 2 * budgets[0]
    assert "MAX_TOKENS" in result.usage.attempts[0]["error"]


def test_max_tokens_twice_fails(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(faults=["max_tokens"])
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "max_tokens" and failed.value.usage.calls == 2


# ----------------------------------------------------------------------------- errors that say what to fix


def test_unknown_model_is_not_retried_and_says_what_to_fix(fake_vertex, tmp_path):
    with pytest.raises(ProviderError) as failed:
        make_provider(fake_vertex, tmp_path, model="gemini-2.0-flash").analyse(PLUGIN, ANALYSIS_PROMPT)
    message = str(failed.value)
    assert failed.value.kind == "not_found" and failed.value.usage.calls == 1
    assert "gemini-2.0-flash" in message and PROJECT in message and "us-central1" in message
    assert "SKILLBUILD_MODEL" in message and fake_vertex.stats()["requests_total"] == 1
    assert_no_token(failed.value)


def test_permission_denied_names_the_project(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(project="someone-else")
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "permission" and failed.value.usage.calls == 1
    assert f"permission denied for project {PROJECT}" in str(failed.value)


def test_rejected_token_is_an_auth_error_without_the_token(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(token="the-right-one")
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path).generate(PLUGIN, {}, GENERATION_PROMPT)
    assert failed.value.kind == "auth" and failed.value.usage.calls == 1
    assert_no_token(failed.value)


def test_token_echoed_by_the_server_is_scrubbed(fake_vertex, tmp_path):
    # The 404 text echoes the model id; a token that ends up in it must still not be shown.
    with pytest.raises(ProviderError) as failed:
        make_provider(fake_vertex, tmp_path, model=f"gemini-1.5-{TOKEN}").analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "not_found" and "***" in str(failed.value)
    assert_no_token(failed.value)
    assert TOKEN not in repr(make_provider(fake_vertex, tmp_path))


def test_a_short_token_is_scrubbed_as_a_word_without_mangling_the_message(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(models=("gemini-2.5-flash",))
    with pytest.raises(ProviderError) as failed:
        make_provider(server, tmp_path, token="zq7", model="zq7").analyse(PLUGIN, ANALYSIS_PROMPT)
    message = str(failed.value)
    assert "zq7" not in message and "model '***' not found in project skillbuild-test" in message
    assert "set a current model id" in message, "the rest of the message stays readable"


class TornBodyHandler(BaseHTTPRequestHandler):
    """A server whose 200 reply is cut mid-JSON (something the fake server never does)."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"candidates": [{"content": {"parts": [{"text": "cut'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_unparseable_reply_is_a_clear_error(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), TornBodyHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(ProviderError) as failed:
            make_provider(f"http://127.0.0.1:{server.server_address[1]}", tmp_path).generate(PLUGIN, {}, "x")
    finally:
        server.shutdown()
        server.server_close()
    assert failed.value.kind == "bad_response" and failed.value.usage.calls == 1
    assert "unexpected reply" in str(failed.value) and failed.value.usage.attempts[0]["status"] is None


# ----------------------------------------------------------------------------- settings and preflight


def settings_for(tmp_path, url: str, **extra: str):
    env = {"SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT,
           "SKILLBUILD_CACHE_ROOT": str(tmp_path / "cache"), "SKILLBUILD_BUILD_ROOT": str(tmp_path / "build"),
           "SKILLBUILD_REQUEST_TIMEOUT": "2",
           "SKILLBUILD_MAX_ATTEMPTS": "2", "SKILLBUILD_PROVIDER": "vertex"}
    env.update(extra)
    return load_settings(env=env, pyproject=tmp_path / "absent.toml")


def test_build_from_settings_uses_the_endpoint_and_the_cache(fake_vertex, tmp_path):
    settings = settings_for(tmp_path, fake_vertex.url)
    caller = caller_for(settings, paced=False)
    provider = caller.provider
    assert (provider.model, provider.project, provider.endpoint) == ("gemini-2.5-flash", PROJECT, fake_vertex.url)
    caller.analyse(PLUGIN, ANALYSIS_PROMPT)
    entries = list((settings.cache_dir / "responses").rglob("*.json"))
    assert len(entries) == 1 and fake_vertex.stats()["requests_total"] == 1


def test_preflight_reports_success_and_what_to_fix(fake_vertex_factory, tmp_path):
    server = fake_vertex_factory(models=("gemini-2.5-flash",))
    ok, message = preflight(settings_for(tmp_path, server.url), paced=False)
    assert ok and "gemini-2.5-flash" in message and PROJECT in message
    ok, message = preflight(settings_for(tmp_path, server.url, SKILLBUILD_MODEL="gemini-9-nonexistent"), paced=False)
    assert not ok and "gemini-9-nonexistent" in message and "not found" in message
    assert TOKEN not in message
    assert server.stats()["requests_total"] == 2, "a preflight always reaches the service, and only once"


def test_missing_application_default_credentials_is_a_clear_setup_error(tmp_path, monkeypatch):
    # No endpoint override: the provider must use ADC, and with none configured say how to log in.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # an empty gcloud config: no ADC file
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # and no metadata-server probe (loopback only)
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_CACHE_ROOT": str(tmp_path / "cache"),
           "SKILLBUILD_BUILD_ROOT": str(tmp_path / "build"), "SKILLBUILD_PROVIDER": "vertex"}
    settings = load_settings(env=env, pyproject=tmp_path / "absent.toml")
    with pytest.raises(ProviderError) as failed:
        caller_for(settings, paced=False).analyse(PLUGIN, ANALYSIS_PROMPT)
    assert failed.value.kind == "config" and "gcloud auth application-default login" in str(failed.value)
    assert failed.value.usage.calls == 0
    ok, message = preflight(settings, paced=False)
    assert not ok and "application-default login" in message
