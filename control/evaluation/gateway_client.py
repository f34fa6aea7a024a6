"""The worker's calls to the gateway's data plane: one aiohttp session, the service key, retries, outages.

Every evaluation call (generation, perplexity, the judge) goes through ``GatewayClient.call``, so it is
routed, policy-checked, metered and priced like any traffic. Each request carries
``x-llmops-evaluation-run: <run id>`` and an ``x-request-id`` of ``<run id>.<what>.<random>`` (the usage
record of every attempt is findable by its run's prefix; a random tail because the gateway keeps request
ids unique).

What an answer means here:

* The gateway cannot be reached (connection refused or reset, no answer at all): an **outage**. The call
  waits with exponential backoff (``retry_backoff_s`` doubling up to ``outage_backoff_max_s``) and tries
  again, without counting an attempt, until the gateway answers or ``stop()`` says the run is being
  cancelled (``Stopped``). ``on_pause`` hears of it once per call, so the run's timeline says it paused.
* 401: the gateway wants a key. The first one mints it (``ServiceCredential``); a key minted more than
  ``lease_s`` ago is replaced (an admin may have revoked it). A new key takes until the gateway's next
  snapshot refresh to be accepted, so 401s are waited out like an outage for up to ``auth_wait_s``;
  after that the 401 is the answer.
* 408, 429 and 5xx (and a timeout, or a body cut short): retried ``retries`` times, ``retry_backoff_s``
  doubling; then the last answer is returned.
* Anything else is returned as is: a 200 with its body, or an error the caller records on the item.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from control.evaluation.credential import ServiceCredential
from control.evaluation.settings import EvaluationSettings

__all__ = ["RUN_HEADER", "GatewayClient", "Reply", "Stopped"]

RUN_HEADER = "x-llmops-evaluation-run"
_RETRYABLE = frozenset({0, 408, 429, 500, 502, 503, 504})  # 0: timed out, or the answer was cut short
_encode = msgspec.json.Encoder().encode


class Stopped(Exception):
    """The caller's ``stop()`` turned true while the call waited out an outage."""


class _Unreachable(Exception):
    pass


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    status: int  # 0: no HTTP answer (timeout, cut short)
    body: Any  # the decoded JSON body (None when not JSON)
    latency_s: float  # of the attempt that answered
    request_id: str
    error: str | None  # why it failed, for the item (None on a 200 with a JSON object)

    @property
    def ok(self) -> bool:
        return self.error is None


def _error_text(status: int, body: Any, raw: bytes) -> str:
    """OpenAI's error message when the body has one (never a header: a key is never echoed)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return f"{status} {err.get('code') or err.get('type') or ''}: {err.get('message', '')}".strip()
    return f"{status}: {raw[:200].decode('utf-8', 'replace')}"


class GatewayClient:
    """Shared by every run of one worker; ``url()`` is read per call (a reload may change it)."""

    def __init__(self, session: aiohttp.ClientSession, url: Callable[[], str | None],
                 credential: ServiceCredential, settings: EvaluationSettings, *, auth_wait_s: float = 60.0) -> None:
        self.session = session
        self._url = url
        self.credential = credential
        self._settings = settings
        self._auth_wait_s = auth_wait_s

    async def call(self, path: str, body: dict[str, Any], *, run_id: str, what: str,
                   stop: Callable[[], bool] = lambda: False,
                   on_pause: Callable[[str], Awaitable[None]] | None = None) -> Reply:
        """POST ``body`` to ``path`` (``/v1/chat/completions``, ``/v1/completions``) with the rules above."""
        s = self._settings
        attempt, waits, auth_since = 0, 0, None
        paused = False
        while True:
            if stop():
                raise Stopped()
            try:
                reply = await self._post(path, body, run_id, f"{run_id}.{what}.{secrets.token_hex(3)}")
            except _Unreachable as err:
                if not paused and on_pause is not None:
                    await on_pause(str(err))
                paused = True
                await asyncio.sleep(min(s.retry_backoff_s * 2 ** waits, s.outage_backoff_max_s) or 0.05)
                waits += 1
                continue
            if reply.status == 401:
                now = time.monotonic()
                auth_since = auth_since or now
                if now - auth_since < self._auth_wait_s:
                    minted = self.credential.minted_at
                    if not minted or now - minted > s.lease_s:
                        await self.credential.mint(replace=self.credential.key_id)
                    await asyncio.sleep(min(0.25 * 2 ** min(waits, 4), 2.0))
                    waits += 1
                    continue
            if reply.status in _RETRYABLE and attempt < s.retries:
                attempt += 1
                await asyncio.sleep(s.retry_backoff_s * 2 ** (attempt - 1))
                continue
            return reply

    async def _post(self, path: str, body: dict[str, Any], run_id: str, request_id: str) -> Reply:
        base = self._url()
        if not base:
            raise _Unreachable("no gateway URL is configured (control.module_settings.evaluation.gateway_url)")
        headers = {"content-type": "application/json", RUN_HEADER: run_id, "x-request-id": request_id}
        authorization = await self.credential.authorization()
        if authorization:
            headers["authorization"] = authorization
        started = time.perf_counter()
        try:
            async with self.session.post(base.rstrip("/") + path, data=_encode(body), headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as err:
            raise _Unreachable(f"the gateway at {base} is unreachable: {type(err).__name__}") from None
        except TimeoutError:
            return Reply(status=0, body=None, latency_s=time.perf_counter() - started, request_id=request_id,
                         error=f"no answer within {self._settings.request_timeout_s:g} s")
        except aiohttp.ClientError as err:
            return Reply(status=0, body=None, latency_s=time.perf_counter() - started, request_id=request_id,
                         error=f"the answer was cut short: {type(err).__name__}")
        latency = time.perf_counter() - started
        try:
            decoded = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            decoded = None
        error = None if status == 200 and isinstance(decoded, dict) else _error_text(status, decoded, raw)
        return Reply(status=status, body=decoded, latency_s=latency, request_id=request_id, error=error)
