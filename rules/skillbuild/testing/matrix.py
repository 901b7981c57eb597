"""The fault matrix and the bad-input table: what the fault tests run and docs/reliability.md prints.

tests/test_faults.py runs each row of FAULTS; tests/test_bad_input.py shows BAD_INPUTS; bench/chaos.py
--markdown prints all three tables.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    name: str  # the fake server's fault
    spec: str  # --fault value
    expect: str  # retry | repair | fail
    outcome: str  # what a maintainer sees (docs/reliability.md)
    evidence: str  # text in the audit DB: an api_calls error, or the failed row's error class
    summary: str = ""  # text in the run summary's FAILED lines


FAULTS = [
    Fault("429", "429:first=1", "retry", "retried after the server's RetryInfo delay; built", "HTTP 429"),
    Fault("500", "500:first=2", "retry", "retried twice with backoff; built", "HTTP 500"),
    Fault("503", "503", "fail", "failed after max_attempts (3); old files kept", "server",
          "Vertex AI call failed after 3 attempt(s)"),
    Fault("hang", "hang:first=1", "retry", "attempt timed out after request_timeout (1 s), retried; built",
          "ReadTimeout"),
    Fault("truncated_json", "truncated_json", "fail", "analysis retried once, then failed as invalid JSON; "
          "generation never ran", "invalid_json", "not valid JSON for the analysis schema after 2 tries"),
    Fault("empty_candidates", "empty_candidates:1,phase=generate", "fail", "failed, not retried (an empty "
          "answer repeats); old files kept", "empty", "the model returned no candidates"),
    Fault("safety", "safety", "fail", "failed, not retried; the reason names the safety filter", "safety",
          "finishReason SAFETY"),
    Fault("max_tokens", "max_tokens:first=1", "retry", "one retry with twice the output budget; built",
          "MAX_TOKENS at 8192 tokens; retrying with 16384"),
    Fault("dashes_in_description", "dashes_in_description", "fail", "gates refused it, the repair too; "
          "candidate kept under cache/rejected/, old files kept", "gate", "contains '---'"),
    Fault("fenced", "fenced:first=1", "repair", "gates refused the fenced file; one repair call fixed it",
          "wrapped in a code fence"),
    Fault("too_short", "too_short:first=1", "repair", "gates refused the short file; one repair call fixed it",
          "bytes; it must be "),
]

OTHER_FAULTS = [  # (fault, outcome, evidence in the audit DB, the test that shows it)
    ("Turso (real sqld) SIGKILLed mid-upload during `doit backup`", "exit 1: \"off-site copy failed ... the "
     "local backup is kept at DIR\"; after a restart the rerun uploads and `doit backups verify=1` says complete",
     "none: backups are not in the audit trail yet; the reason is printed", "test_turso_dying_mid_upload"),
    ("disk full (1 MiB tmpfs) while writing SKILL.md", "ENOSPC: the write fails, its temp file is removed, the old "
     "file kept; after freeing space the rerun builds from the response cache with no new call",
     "`OSError` row per plugin (No space left on device)", "test_full_disk"),
]


H, CATALOG, EMPTY = "test_hostile_marketplace", "test_malformed_catalog", "test_empty_marketplace"
BAD_INPUTS = [  # (input, outcome, the test that shows it)
    ("plugin.json with a syntax error", "that plugin fails naming file, line and column; the others build", H),
    ("catalog `source` leaving the marketplace (`../outside-plugin`)", "rejected naming the entry; nothing read", H),
    ("catalog `source` that is a symlink to a folder outside", "rejected like any outside source", H),
    ("symlinked file leaving the plugin folder", "skipped; its content is never sent", H),
    ("binary file and non-UTF-8 file among the commands", "skipped (binary or not UTF-8 text)", H),
    ("50 MB file, and a 150 KB agent file", "the 50 MB file is left out (over file_max_bytes); the agent file is "
                                            "cut to input_file_budget; the largest request stays under 130 KB", H),
    ("`.env`, `server.pem`, `id_rsa`, `credentials.json` holding a marker", "never read: the marker is in no "
     "request, log, audit row or cache file (only in the verified plugin backups, which must restore them)", H),
    ("README prompt injection, and a model answer naming `../../` paths", "the answer's bad `name` fails the "
     "gates, the repair lands at the plugin's own target; nothing written anywhere else", H),
    ("two plugins whose names normalise to one skill name", "the second fails naming both; the first builds", H),
    ("a name that cannot become a skill name (`!!!` in the catalog, `???` in an untracked plugin.json)",
     "fails with the rename to make, under a task of its own", H),
    ("malformed, non-UTF-8 or shapeless catalog", "exit 3 naming the file (line and column for JSON); no call",
     CATALOG),
    ("empty marketplace", "nothing to build, said so; no API call, no audit run, no lock taken", EMPTY),
]
