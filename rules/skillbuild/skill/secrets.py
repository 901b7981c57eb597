"""Credential patterns (the one home for them) and redaction of text before it is sent, kept or logged.

Three users: prompt inputs (`redact_counted`, `redact_config_values`), the output gate (`findings`, which
names the pattern and line, never the value) and the audit trail (`redact`, which also hides the looser
`name: value` assignments a log line may hold).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Named so a gate reason can say what was found without repeating it.
PATTERNS: list[tuple[str, re.Pattern]] = [
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{30,}")),
    ("Google OAuth token", re.compile(r"\bya29\.[0-9A-Za-z._-]{10,}")),
    ("Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("API key (sk-)", re.compile(r"\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}")),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
    ("private key block",
     re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)")),
    # a digit in the value: "a Bearer token" and "Bearer authentication" are prose, not credentials
    ("bearer token", re.compile(r"(?i)\bbearer\s+(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}")),
]
# `password=hunter2xyz`, `API_TOKEN="abc123def"`: a literal value, not `$VAR`, `<token>`, `os.environ[...]`,
# an upper-case variable name or a documented stand-in (`your-token-here`, `example-key`). The name stays readable; only the value is replaced.
LITERAL_ASSIGNMENT = re.compile(
    r"(?i)(\b[\w-]*(?:password|passwd|token|secret|api[_-]?key)\s*=\s*([\"']?))"
    r"(?-i:(?![A-Z0-9_]+\b))(?![^\s\"']*(?:your|here|example|sample|dummy|placeholder|changeme|xxxx))"
    r"([A-Za-z0-9_+/=!@#%^*-]{8,})(?![\w.(\[{$])")
# Looser, for log lines only: `"api_key": "abc"`, `password: abc`, `Authorization: xyz`. The name must end in
# the secret word (or a short suffix of it), so a plugin named `secret-sentry: ...` stays readable.
LOG_ASSIGNMENT = re.compile(
    r"(?i)(\b[\w.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|credential|authorization)"
    r"(?:[_-]?(?:key|value|id|file|s))?\"?\s*[=:]\s*\"?)"
    r"(?!\d+\b)([^\s\"',;&}]+)"  # numbers are counts (max_output_tokens: 8192), not secrets
)
LOG_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{4,}")  # logs: any bearer value at all
# Values of these maps in .mcp.json, hooks.json and plugin.json are environment and HTTP headers: secrets.
CONFIG_BLOCK = re.compile(r"(\"(?:env|headers)\"\s*:\s*\{)([^{}]*)")
# A value cut off by the input budget (no closing quote) is still a value.
JSON_MEMBER = re.compile(r"(\"(?:[^\"\\]|\\.)*\"\s*:\s*)\"(?:[^\"\\]|\\.)*(?:\"|$)")
MIN_SECRET_LENGTH = 6  # shorter listed "secrets" (e.g. a test token "x") would blank out ordinary text


def redact_counted(text: str) -> tuple[str, int]:
    """Every credential-looking string replaced by [REDACTED]; and how many were."""
    count = 0
    for _, pattern in PATTERNS:
        text, n = pattern.subn(REDACTED, text)
        count += n
    text, n = LITERAL_ASSIGNMENT.subn(lambda m: m.group(1) + REDACTED + m.group(2), text)
    return text, count + n


def redact_config_values(text: str) -> tuple[str, int]:
    """Every string value inside an `"env": {...}` or `"headers": {...}` map of a JSON text (cut or not)."""
    count = 0

    def block(match: re.Match) -> str:
        nonlocal count
        body, n = JSON_MEMBER.subn(lambda m: m.group(1) + f'"{REDACTED}"', match.group(2))
        count += n
        return match.group(1) + body

    return CONFIG_BLOCK.sub(block, text), count


def redact_data(value, under_config: bool = False) -> tuple[object, int]:
    """A parsed JSON value with secrets redacted: strings matched by the patterns, and every value of an
    `env` or `headers` map. Returns the new value and the count."""
    if isinstance(value, dict):
        out, count = {}, 0
        for key, item in value.items():
            out[key], n = redact_data(item, under_config or key in ("env", "headers"))
            count += n
        return out, count
    if isinstance(value, list):
        pairs = [redact_data(item, under_config) for item in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    if isinstance(value, str):
        if under_config and value != REDACTED:
            return REDACTED, 1
        return redact_counted(value)
    return value, 0


def findings(text: str) -> list[str]:
    """'GitHub token on line 12' for each credential in `text`: the pattern and line, never the value."""
    found: list[str] = []
    for name, pattern in [*PATTERNS, ("password/token assignment", LITERAL_ASSIGNMENT)]:
        for match in pattern.finditer(text):
            found.append(f"{name} on line {text.count(chr(10), 0, match.start()) + 1}")
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """For logs and kept files: listed secrets, the credential patterns and looser `name: value` pairs."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text, _ = redact_counted(LOG_BEARER.sub(REDACTED, text))
    return LOG_ASSIGNMENT.sub(lambda m: m.group(1) + (REDACTED if m.group(2) != REDACTED else m.group(2)), text)
