"""Vertex AI batch prediction and Cloud Storage through their SDKs: upload, create, get, list, cancel, read.

Only wraps google-genai's `batches` and google-cloud-storage; what is sent and what the answers mean is the
calls path's (skillbuild/calls/batch.py). With `STORAGE_EMULATOR_HOST` set (tests, benchmarks) the storage
client talks to that emulator with anonymous credentials; otherwise Application Default Credentials.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from skillbuild.providers.base import ProviderError

FINAL_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                          "JOB_STATE_PARTIALLY_SUCCEEDED"})


@dataclass(frozen=True)
class JobStatus:
    """What one poll of a job says."""

    name: str
    display_name: str
    state: str  # e.g. "JOB_STATE_RUNNING"
    succeeded: int = 0
    failed: int = 0
    incomplete: int = 0
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def split_uri(uri: str) -> tuple[str, str]:
    """("bucket", "path/in/bucket") of a gs:// URI."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def bucket_name(setting: str) -> str:
    """`batch_bucket` given as gs://bucket (optionally with a trailing slash) or as a bare name."""
    name = setting[5:] if setting.startswith("gs://") else setting
    return name.strip("/")


class BatchService:
    """One Vertex provider's batch jobs and the bucket they read and write."""

    def __init__(self, provider: Any, project: str | None):
        self.provider = provider  # a VertexProvider: its SDK client and model
        self.project = project
        self._storage = None

    # -- Cloud Storage
    def storage(self) -> Any:
        if self._storage is None:
            from google.cloud import storage

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self._storage = storage.Client(project=self.project or "local", credentials=AnonymousCredentials())
            else:
                self._storage = storage.Client(project=self.project)
        return self._storage

    def upload(self, uri: str, data: bytes) -> bool:
        """Put `data` at `uri` unless the same bytes are there already (same requests, same object): True if
        it was written."""
        import hashlib
        import base64

        bucket, name = split_uri(uri)
        blob = self.storage().bucket(bucket).blob(name)
        want = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 (GCS reports MD5)
        if blob.exists():
            blob.reload()
            if blob.md5_hash == want:
                return False
        blob.upload_from_string(data, content_type="application/jsonl")
        return True

    def read_prefix(self, uri: str) -> list[tuple[str, str]]:
        """(object name, text) of every .jsonl object under a gs:// prefix."""
        bucket, prefix = split_uri(uri)
        blobs = self.storage().list_blobs(bucket, prefix=prefix.rstrip("/") + "/")
        return [(b.name, b.download_as_bytes().decode("utf-8")) for b in blobs if b.name.endswith(".jsonl")]

    # -- batch jobs
    def create(self, src: str, dest: str, display_name: str) -> str:
        from google.genai import types

        job = self._client().batches.create(
            model=self.provider.model, src=src,
            config=types.CreateBatchJobConfig(dest=dest, display_name=display_name))
        return job.name

    def get(self, name: str) -> JobStatus:
        return _status(self._client().batches.get(name=name))

    def find(self, display_name: str) -> JobStatus | None:
        """The newest job with this display name, or None: how a run adopts a job whose creation it did not see
        answer."""
        found = [_status(j) for j in self._client().batches.list(config={"page_size": 100})
                 if j.display_name == display_name]
        return found[-1] if found else None

    def cancel(self, name: str) -> None:
        self._client().batches.cancel(name=name)

    def _client(self) -> Any:
        self.provider.connect()
        return self.provider._client_or_create()


def _status(job: Any) -> JobStatus:
    stats = job.completion_stats
    state = getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED"
    error = getattr(job.error, "message", None) if job.error else None
    return JobStatus(job.name, job.display_name or "", str(state),
                     int(getattr(stats, "successful_count", 0) or 0) if stats else 0,
                     int(getattr(stats, "failed_count", 0) or 0) if stats else 0,
                     int(getattr(stats, "incomplete_count", 0) or 0) if stats else 0, error)


def request_body(provider: Any, request: Any) -> dict:
    """The generateContent body the SDK would send for `request` (contents, systemInstruction,
    generationConfig), made by the SDK's own converter so a batch row and an online call cannot differ."""
    from google.genai import _common, models, types

    config = request.native.model_copy(update={"system_instruction": request.prompt})
    params = types._GenerateContentParameters(model=request.model, contents=request.message, config=config)
    body = models._GenerateContentParameters_to_vertex(provider._client_or_create()._api_client, params)
    body.pop("_url", None)
    return _common.encode_unserializable_types(_common.convert_to_dict(body))  # as the SDK's own request


def reply_of(response: dict) -> Any:
    """A `response` of an output line as the online path's Reply (finish reason, text, tokens)."""
    from google.genai import types

    from skillbuild.providers.vertex import _reply

    return _reply(types.GenerateContentResponse.model_validate(response))


def service_for(provider: Any) -> BatchService:
    """The batch service of a provider that declares `can_batch`."""
    if not provider.can_batch:
        raise ProviderError(f"the {provider.name} provider cannot send batch jobs; use provider=vertex", "config")
    return BatchService(provider, getattr(provider, "project", None))
