"""Settings, faults and recorded traffic of the mock upstream (a TEST DOUBLE).

Kept apart from the HTTP handlers so tests and the control endpoints share one
mutable state object: tests swap `config`, queue `Fault`s and read back
`requests` / `disconnects` to prove what the gateway actually sent upstream.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, cast

import msgspec

__all__ = ["Fault", "FaultSyntaxError", "MockConfig", "MockState", "RecordedRequest", "ScriptRule", "parse_fault"]

FaultKind = Literal["status", "timeout", "drop", "malformed", "drop_mid_stream", "error_mid_stream"]


class ScriptRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A scripted answer: when ``match`` is a substring of the request's last user message (completions:
    its prompt, the last one of a list; responses: its input text), or is ``"*"``, ``reply`` is the answer
    text, exactly (whitespace kept), instead of the word cycle. Lets a test script a judge's verdicts."""

    match: str
    reply: str


class MockConfig(msgspec.Struct, kw_only=True):
    """How the double answers; replace it whole (`msgspec.structs.replace`) to change behaviour."""

    latency_s: float = 0.0  # delay before response headers are sent
    tokens_per_s: float = 0.0  # stream pacing; 0 = no delay between content chunks
    completion_tokens: int = 16  # words in the answer, capped by the request's max_tokens
    chunk_tokens: int = 1  # words per stream content chunk
    # Report usage (streams: only when stream_options.include_usage too); off, Ollama's final line
    # has no prompt_eval_count, as Ollama omits it when its KV cache held the whole prompt.
    usage: bool = True
    # Usage details, as OpenAI reports them (chat, completions, responses): how many prompt tokens were
    # cached reads, how many cache writes (`prompt_tokens_details.cache_write_tokens`, the openai SDK's and
    # OpenRouter's name; only when set), and hidden reasoning tokens, which add to the completion tokens.
    # All 0: no details at all, the plain usage object.
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    usage_on_last_choice: bool = False  # stream usage on the finish chunk, as some proxies and vLLM do
    api_key: str | None = None  # when set, require `Authorization: Bearer <api_key>`
    model_name: str | None = None  # reported model; None echoes the request's model
    vllm_waiting: int = 0  # exported as vllm:num_requests_waiting on GET /metrics
    record_limit: int = 10_000  # recorded requests kept; bounds memory under benchmarks
    # Faults reachable over HTTP (`x-mock-fault`, `fault:`/`slow:` models, `/_mock/*`) stay off
    # unless asked for (`--faults`, or a test's MockConfig): the gateway's embedded default runs
    # this double, and anyone able to send it a model name could otherwise open its breaker.
    # `MockState.push_faults` is Python-only, so in-process tests may always use it.
    faults: bool = False
    # /v1/completions `logprobs`: True answers them (the rule is in mock_endpoints.token_logprob); False refuses
    # a request asking for them with 400 (param `logprobs`), as a server that cannot compute them does;
    # "omit" answers without them (`logprobs: null`), as servers that ignore the parameter do.
    logprobs: bool | Literal["omit"] = True
    # Scripted answers, first match wins; none matching (or none at all): the deterministic word cycle.
    script: list[ScriptRule] = []


class Fault(msgspec.Struct, kw_only=True):
    """One injected failure; applies to a single chat request."""

    kind: FaultKind
    status: int = 503  # kind="status": answer this status with an error body
    after_chunks: int = 2  # *_mid_stream: content chunks sent before the fault
    delay_s: float = 30.0  # kind="timeout": sleep this long before answering


class RecordedRequest(msgspec.Struct):
    method: str
    path: str
    headers: dict[str, str]  # lower-case keys
    body: Any  # decoded JSON, or None when the body was empty or not JSON


class FaultSyntaxError(ValueError):
    """A compact fault spec (`x-mock-fault` header or `fault:` model) did not parse."""


_VALUED = {"status": "status", "timeout": "delay_s", "drop_mid_stream": "after_chunks",
           "error_mid_stream": "after_chunks"}
_BARE = {"drop", "malformed"}


def parse_fault(spec: str) -> Fault:
    """`status=503`, `timeout=2.5`, `drop`, `malformed`, `drop_mid_stream=3`, `error_mid_stream=2`.

    A valued kind without a value keeps the Fault default (`timeout` sleeps 30 s).
    """
    kind, sep, value = spec.strip().partition("=")
    name = kind.strip()
    if name in _BARE and not sep:
        return Fault(kind=cast(FaultKind, name))
    if name not in _VALUED:
        raise FaultSyntaxError(f"unknown mock fault {spec!r}")
    if not sep:
        return Fault(kind=cast(FaultKind, name))
    field = _VALUED[name]
    try:
        number: float | int = float(value) if field == "delay_s" else int(value)
    except ValueError:
        raise FaultSyntaxError(f"bad value in mock fault {spec!r}") from None
    return msgspec.structs.replace(Fault(kind=cast(FaultKind, name)), **{field: number})


class MockState:
    """Everything a request handler reads or updates; `MockServer` adds the socket."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self.initial_config = self.config
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        self.disconnects = 0
        self.active = 0

    def push_faults(self, *faults: Fault) -> None:
        """FIFO: each fault applies to the next chat request without its own fault, then is consumed."""
        self.faults.extend(faults)

    def next_fault(self) -> Fault | None:
        return self.faults.popleft() if self.faults else None

    def clear(self) -> None:
        """Forget requests, queued faults and counters (`active` tracks live requests, so it stays)."""
        self.requests.clear()
        self.faults.clear()
        self.disconnects = 0

    def record(self, method: str, path: str, headers: Any, body: Any) -> None:
        if len(self.requests) >= self.config.record_limit > 0:
            del self.requests[: max(1, len(self.requests) // 2)]  # amortised trim, keeps the newest half
        self.requests.append(RecordedRequest(method, path, {k.lower(): v for k, v in headers.items()}, body))
