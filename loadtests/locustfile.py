"""Locust users for a running gateway: chat completions, non-streaming and streaming.

`locust -f loadtests/locustfile.py --host http://127.0.0.1:4000` (add `--headless -u 50 -r 10 -t 60s`
for a run without the web UI). The route comes from `LLMOPS_ROUTE` (default `demo`, the embedded
default config's mock route); `LLMOPS_API_KEY`, when set, is sent as a bearer token.

Locust is Python-bound, so it finds functional limits (errors, latency under many users), not the
gateway's ceiling; for throughput numbers use `python -m loadtests.bench` (wrk).
"""

from __future__ import annotations

import json
import os
import time

from locust import FastHttpUser, between, events, task

ROUTE = os.environ.get("LLMOPS_ROUTE", "demo")
API_KEY = os.environ.get("LLMOPS_API_KEY")
PROMPT = [{"role": "user", "content": "Say hello in five words."}]


def _headers() -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if API_KEY:
        headers["authorization"] = f"Bearer {API_KEY}"
    return headers


class ChatUser(FastHttpUser):
    """Mostly plain completions, some streams: roughly how chat front-ends mix them."""

    wait_time = between(0.0, 0.1)

    @task(3)
    def chat(self) -> None:
        body = {"model": ROUTE, "messages": PROMPT}
        with self.client.post(
            "/v1/chat/completions", json=body, headers=_headers(), name="chat", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return
            try:
                data = resp.json()
            except ValueError:
                resp.failure("body is not JSON")
                return
            if not data.get("choices"):
                resp.failure("no choices in the answer")

    @task(1)
    def chat_stream(self) -> None:
        """Reads the SSE stream to `[DONE]`.

        Locust times a streamed request to its response headers (`chat stream`), so the time to the
        first content event is reported as its own entry, `stream ttft`.
        """
        body = {"model": ROUTE, "messages": PROMPT, "stream": True}
        start = time.perf_counter()
        first: float | None = None
        done = False
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers=_headers(),
            name="chat stream",
            stream=True,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            buffer = b""
            for chunk in resp.iter_content(chunk_size=1024, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() == b"data: [DONE]":
                        done = True
                    elif first is None and line.startswith(b"data:") and _has_content(line[5:]):
                        first = time.perf_counter()
            if not done:
                resp.failure("stream ended without data: [DONE]")
        if first is not None:
            events.request.fire(
                request_type="SSE",
                name="stream ttft",
                response_time=(first - start) * 1e3,
                response_length=0,
                exception=None,
                context={},
            )


def _has_content(payload: bytes) -> bool:
    try:
        choices = json.loads(payload).get("choices") or []
    except ValueError:
        return False
    return bool(choices and (choices[0].get("delta") or {}).get("content"))
