"""A Cloud Storage emulator (PyPI `gcp-storage-emulator`) on loopback for the batch tests and benchmark.

`start_emulator(bucket)` runs `gcp-storage-emulator start --port P --in-memory --default-bucket B` and waits
until it answers; clients reach it with `STORAGE_EMULATOR_HOST=<url>` and anonymous credentials.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

READY_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command() -> list[str]:
    """The emulator's script beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "gcp-storage-emulator"
    found = str(beside) if beside.exists() else shutil.which("gcp-storage-emulator")
    if not found:
        raise RuntimeError("gcp-storage-emulator is not installed: pip install -e '.[test]'")
    return [found]


def start_emulator(bucket: str, log=None) -> tuple[subprocess.Popen, str]:
    """(process, http://127.0.0.1:P) of a fresh in-memory emulator holding `bucket`."""
    port = _free_port()
    proc = subprocess.Popen([*_command(), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                             "--default-bucket", bucket, "-q"],
                            stdout=log or subprocess.DEVNULL, stderr=log or subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gcp-storage-emulator did not answer at {url} within {READY_TIMEOUT:g}s")
