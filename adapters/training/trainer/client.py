"""The job's API from inside a trainer (``contract.py``), with the standard library only.

Every call carries the job token; nothing here prints or raises it. Idempotent calls (GET, PUT) are retried
with backoff on a connection error or a 5xx, so a short platform outage costs a few seconds, not the attempt.
``ApiError`` is what is left when the retries are spent or the platform refused (4xx).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

__all__ = ["ApiError", "JobClient"]


class ApiError(Exception):
    """A job API call failed; ``status`` is the HTTP status (0 when the platform could not be reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class JobClient:
    """One job's API: ``base_url`` is ``API_BASE_URL``; ``token`` the job token (kept private)."""

    def __init__(self, base_url: str, job_id: str, token: str, *, timeout_s: float = 60.0, retries: int = 4,
                 backoff_s: float = 0.5) -> None:
        self._root = f"{base_url.rstrip('/')}/training/jobs/{urllib.parse.quote(job_id, safe='')}"
        self._auth = f"Bearer {token}"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    def __repr__(self) -> str:  # never the token
        return f"JobClient({self._root!r})"

    @property
    def metrics_url(self) -> str:
        return f"{self._root}/metrics"

    @property
    def auth_header(self) -> str:
        return self._auth

    def _open(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        """The open response of ``method path`` (the caller closes it), retrying what may succeed later."""
        request = urllib.request.Request(f"{self._root}/{path}", data=data, method=method,
                                         headers={"Authorization": self._auth, **(headers or {})})
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return urllib.request.urlopen(request, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                status, detail = exc.code, _message(exc)
                exc.close()
                if status < 500 or attempt == self.retries:
                    raise ApiError(f"{method} {path.split('?')[0]}: HTTP {status}: {detail}", status) from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt == self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise ApiError(f"{method} {path.split('?')[0]}: platform unreachable: {reason}") from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        with self._open(method, path, data, headers) as resp:
            return json.loads(resp.read() or b"null")

    def _bytes(self, path: str) -> bytes:
        with self._open("GET", path) as resp:
            data: bytes = resp.read()
            return data

    def dataset_rows(self) -> Iterator[Any]:
        """The dataset version's rows, decoded one JSON line at a time (never the whole file in memory)."""
        with self._open("GET", "inputs/dataset") as resp:
            for number, line in enumerate(resp, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    raise ApiError(f"dataset line {number} is not JSON") from None

    def model_files(self) -> list[str]:
        """The base model's file names (a fine-tune)."""
        body = self._json("GET", "inputs/model")
        return [str(f["name"]) for f in (body or {}).get("files", [])]

    def model_file(self, name: str) -> bytes:
        return self._bytes(f"inputs/model/{urllib.parse.quote(name, safe='')}")

    def put_artifact(self, path: str, data: bytes) -> dict[str, Any]:
        """Store ``data`` at ``path`` (under ``checkpoints/`` or ``output/``); the answer's key, size and digest."""
        answer: dict[str, Any] = self._json("PUT", f"artifacts/{urllib.parse.quote(path, safe='/')}", data,
                                            {"Content-Type": "application/octet-stream"})
        return answer

    def list_artifacts(self, prefix: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"artifacts?{urllib.parse.urlencode({'prefix': prefix})}")
        return list((body or {}).get("files", []))

    def artifact(self, path: str) -> bytes:
        return self._bytes(f"artifacts/{urllib.parse.quote(path, safe='/')}")


def _message(exc: urllib.error.HTTPError) -> str:
    """The envelope's ``message`` when there is one (short; the platform never puts a secret in it)."""
    try:
        body = json.loads(exc.read(4096) or b"{}")
    except (ValueError, OSError):
        return exc.reason if isinstance(exc.reason, str) else "error"
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:200] if message else str(exc.reason)
