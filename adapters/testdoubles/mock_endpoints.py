"""Wire bodies of the mock upstream's other OpenAI endpoints: `/v1/completions`, `/v1/embeddings`, `/v1/responses`.

Same surface as `mock_responses.OpenAIReply` (`body`, `head`, `step`, `tail`, `error_frames`,
`malformed`, `error_body`) so the one fault/pacing loop serves them too. Deterministic:
prompt tokens are whitespace words, the answer is the same word cycle (or a scripted reply),
embeddings are derived from a hash of the input, and a token's logprob depends only on its
length (`token_logprob`), so a test can compute a perplexity by hand.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from adapters.testdoubles.mock_responses import (
    MID_STREAM_ERROR,
    BadRequest,
    OpenAIReply,
    _cap,
    _Reply,
    openai_usage,
    split_pieces,
)
from adapters.testdoubles.mock_state import MockConfig

__all__ = ["CompletionReply", "EmbeddingReply", "ResponsesReply", "token_logprob"]

_encode = msgspec.json.Encoder().encode


def token_logprob(token: str) -> float:
    """The double's logprob of a token: `-(1 + len(word) % 3) / 2`, `word` being the token without its
    surrounding whitespace, so -0.5, -1.0 or -1.5 (e.g. " cat": -0.5, " b": -1.0, " is": -1.5).
    Varied on purpose: a perplexity averaged the wrong way round does not come out right by accident."""
    return -(1 + len(token.strip()) % 3) / 2


def _model(body: dict[str, Any]) -> str:
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    return str(body["model"])


def _texts(value: Any, param: str) -> list[str]:
    """A prompt or embedding input: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(f"t{v}" for v in value)]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(f"t{t}" for t in v) for v in value]
    raise BadRequest(f"{param} must be a string, a list of strings or token ids", param)


class CompletionReply(_Reply):
    """`text_completion` bodies and chunks; `echo` prepends the prompt, `logprobs: k` adds the legacy
    logprobs object (with `echo`, over the prompt's tokens too, the very first one's logprob `null`, as
    OpenAI and vLLM answer: nothing precedes it). Its tokens concatenate to the choice's text, each
    `text_offset` is where the token starts in it, and `top_logprobs` holds the token itself only.
    `MockConfig.logprobs` off refuses the request (400), `"omit"` answers `logprobs: null`."""

    content_type = "application/json"
    stream_content_type = "text/event-stream"
    error_body = staticmethod(OpenAIReply.error_body)

    def __init__(self, cfg: MockConfig, body: dict[str, Any]) -> None:
        model = _model(body)
        if "prompt" not in body:
            raise BadRequest("you must provide a prompt parameter", "prompt")
        self.prompts = _texts(body["prompt"], "prompt")
        limit = _cap(body.get("max_tokens"), "max_tokens")
        # OpenAI's default max_tokens here is 16, for scripted replies too.
        super().__init__(cfg, model, [], 16 if limit is None else limit, self.prompts[-1] if cfg.script else None)
        self.prompt_tokens = sum(len(p.split()) for p in self.prompts)
        n = _cap(body.get("n"), "n")
        self.n = 1 if n is None else n
        self.echo = body.get("echo") is True
        self.logprobs = _cap(body.get("logprobs"), "logprobs")
        if self.logprobs is not None and cfg.logprobs is not True:
            if cfg.logprobs is False:
                raise BadRequest("this model does not return logprobs (mock upstream: logprobs off)", "logprobs")
            self.logprobs = None  # "omit": answered as if never asked, like servers that ignore the parameter
        self.stream = body.get("stream") is True
        opts = body.get("stream_options")
        self.usage_chunk = isinstance(opts, dict) and opts.get("include_usage") is True and cfg.usage
        self.report_usage = cfg.usage
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def usage(self) -> dict[str, Any]:
        return openai_usage(self.cfg, self.prompt_tokens, len(self.pieces) * self.n * len(self.prompts))

    def _lp(self, tokens: Sequence[str], start: int, first_null: bool) -> dict[str, Any] | None:
        """The legacy logprobs object over `tokens`, the first of which starts at `start` in the text."""
        if self.logprobs is None:
            return None
        offsets, at = [], start
        for t in tokens:
            offsets.append(at)
            at += len(t)
        lps: list[float | None] = [token_logprob(t) for t in tokens]
        top: list[dict[str, float] | None] = (
            [{t: token_logprob(t)} for t in tokens] if self.logprobs > 0 else [])
        if first_null and lps:
            lps[0] = None
            if top:
                top[0] = None
        return {"tokens": list(tokens), "token_logprobs": lps, "top_logprobs": top, "text_offset": offsets}

    def _sep(self, prompt: str) -> str:
        """Between an echoed prompt and the answer: one space (the word cycle's first word has none)."""
        return " " if self.echo and prompt and self.pieces else ""

    def _choice(self, index: int, text: str, logprobs: Any, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}

    def _choices(self, make: Any) -> list[dict[str, Any]]:
        return [make(p * self.n + i, prompt) for p, prompt in enumerate(self.prompts) for i in range(self.n)]

    def _full(self, index: int, prompt: str) -> dict[str, Any]:
        sep = self._sep(prompt)
        text = (prompt if self.echo else "") + sep + self.content
        lp = None
        if self.logprobs is not None:
            answer = list(self.pieces)
            if sep:
                answer[0] = sep + answer[0]
            lp = self._lp((list(split_pieces(prompt)) if self.echo else []) + answer, 0, self.echo)
        return self._choice(index, text, lp, self.finish)

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        out: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                               "model": self.model, "system_fingerprint": "mock", "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return b"data: " + _encode(out) + b"\n\n"

    def body(self) -> bytes:
        out: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                               "model": self.model, "system_fingerprint": "mock",
                               "choices": self._choices(self._full)}
        if self.report_usage:
            out["usage"] = self.usage()
        return _encode(out)

    def head(self) -> bytes:
        if not self.echo:
            return b""
        return self._chunk(self._choices(
            lambda i, p: self._choice(i, p, self._lp(split_pieces(p), 0, True), None)))

    def _step_choice(self, index: int, prompt: str, i: int) -> dict[str, Any]:
        k = self.chunk_tokens
        sep = self._sep(prompt) if i == 0 else ""
        lp = None
        if self.logprobs is not None:
            tokens = list(self.pieces[i * k : (i + 1) * k])
            if sep:
                tokens[0] = sep + tokens[0]
            start = (len(prompt) + len(self._sep(prompt)) if self.echo else 0) + sum(map(len, self.pieces[: i * k]))
            lp = self._lp(tokens, start - len(sep), False)
        return self._choice(index, sep + self.step_text(i), lp, None)

    def step(self, i: int) -> bytes:
        return self._chunk(self._choices(lambda idx, p: self._step_choice(idx, p, i)))

    def tail(self) -> bytes:
        choices = self._choices(lambda i, p: self._choice(i, "", None, self.finish))
        if self.usage_chunk and self.cfg.usage_on_last_choice:  # on the finish chunk, as some proxies do
            return self._chunk(choices, self.usage()) + b"data: [DONE]\n\n"
        out = self._chunk(choices)
        if self.usage_chunk:
            out += self._chunk([], self.usage())
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error_frames() -> bytes:
        return OpenAIReply.error_frames()

    def malformed(self) -> bytes:
        return b'data: {"id": "cmpl-x", "choices": [\n\ndata: [DONE]\n\n' if self.stream else b'{"id": "cmpl-x", '


class EmbeddingReply(_Reply):
    """`list` of `embedding` objects, floats or base64 (little-endian float32, the SDK's default ask)."""

    content_type = "application/json"
    stream_content_type = "application/json"
    error_body = staticmethod(OpenAIReply.error_body)
    stream = False

    def __init__(self, cfg: MockConfig, body: dict[str, Any]) -> None:
        model = _model(body)
        if "input" not in body:
            raise BadRequest("you must provide an input parameter", "input")
        self.inputs = _texts(body["input"], "input")
        dims = _cap(body.get("dimensions"), "dimensions")
        self.dims = 8 if dims is None else dims
        if self.dims < 1:
            raise BadRequest("dimensions must be at least 1", "dimensions")
        self.base64 = body.get("encoding_format") == "base64"
        if body.get("encoding_format") not in (None, "float", "base64"):
            raise BadRequest("encoding_format must be float or base64", "encoding_format")
        super().__init__(cfg, model, [], 0)
        self.prompt_tokens = sum(len(t.split()) for t in self.inputs)
        self.report_usage = cfg.usage

    def vector(self, text: str) -> list[float]:
        digest = hashlib.sha256(text.encode()).digest()
        raw = [(digest[i % len(digest)] - 128) / 128.0 for i in range(self.dims)]
        norm = sum(v * v for v in raw) ** 0.5 or 1.0
        return [v / norm for v in raw]

    def _embedding(self, text: str) -> Any:
        vec = self.vector(text)
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if self.base64 else vec

    def body(self) -> bytes:
        out: dict[str, Any] = {
            "object": "list", "model": self.model,
            "data": [{"object": "embedding", "index": i, "embedding": self._embedding(t)}
                     for i, t in enumerate(self.inputs)],
        }
        if self.report_usage:
            out["usage"] = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        return _encode(out)

    def head(self) -> bytes:  # never streamed; the surface is kept for the shared loop
        return b""

    def step(self, i: int) -> bytes:
        return b""

    def tail(self) -> bytes:
        return b""

    @staticmethod
    def error_frames() -> bytes:
        return b""

    def malformed(self) -> bytes:
        return b'{"object": "list", "data": ['


def _input_text(value: Any) -> str:
    """The Responses API's `input`: a string, or items (messages whose content is a string or parts)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest("input must be a string or a list of input items", "input")
    out = []
    for item in value:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return " ".join(out)


class ResponsesReply(_Reply):
    """`response` objects, and the typed event stream (`event: <type>` + `data:`, no `[DONE]`):
    response.created, response.in_progress, response.output_item.added, response.content_part.added,
    response.output_text.delta…, response.output_text.done, response.content_part.done,
    response.output_item.done, response.completed (with `usage`)."""

    content_type = "application/json"
    stream_content_type = "text/event-stream"
    error_body = staticmethod(OpenAIReply.error_body)

    def __init__(self, cfg: MockConfig, body: dict[str, Any]) -> None:
        model = _model(body)
        text = _input_text(body.get("input", ""))
        limit = _cap(body.get("max_output_tokens"), "max_output_tokens")
        super().__init__(cfg, model, [], limit, text if cfg.script else None)
        instructions = body.get("instructions")
        self.prompt_tokens = len(text.split()) + (len(instructions.split()) if isinstance(instructions, str) else 0)
        self.stream = body.get("stream") is True
        self.report_usage = cfg.usage
        self.id = "resp_" + uuid.uuid4().hex[:24]
        self.msg_id = "msg_" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self._seq = 0
        self._echo = {k: body.get(k) for k in ("instructions", "max_output_tokens", "metadata", "previous_response_id")}

    def _part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _item(self, done: bool) -> dict[str, Any]:
        return {"type": "message", "id": self.msg_id, "status": "completed" if done else "in_progress",
                "role": "assistant", "content": [self._part(self.content)] if done else []}

    def response(self, done: bool) -> dict[str, Any]:
        status = "in_progress" if not done else ("incomplete" if self.finish == "length" else "completed")
        usage = None
        if done and self.report_usage:
            cfg, prompt = self.cfg, self.prompt_tokens
            out_tokens = len(self.pieces) + cfg.reasoning_tokens  # hidden reasoning counts as output
            cached = min(cfg.cached_tokens, prompt)
            details: dict[str, int] = {"cached_tokens": cached}
            if cfg.cache_write_tokens:
                details["cache_write_tokens"] = min(cfg.cache_write_tokens, prompt - cached)
            usage = {"input_tokens": prompt, "input_tokens_details": details,
                     "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": cfg.reasoning_tokens},
                     "total_tokens": prompt + out_tokens}
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if done and status == "incomplete" else None,
            "model": self.model, "output": [self._item(True)] if done else [], "parallel_tool_calls": True,
            "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
            "text": {"format": {"type": "text"}}, "usage": usage, **self._echo,
            "metadata": self._echo["metadata"] or {},
        }

    def body(self) -> bytes:
        return _encode(self.response(True))

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.msg_id, "output_index": 0, "content_index": 0}

    def head(self) -> bytes:
        return (self._event("response.created", response=self.response(False))
                + self._event("response.in_progress", response=self.response(False))
                + self._event("response.output_item.added", output_index=0, item=self._item(False))
                + self._event("response.content_part.added", **self._at(), part=self._part("")))

    def step(self, i: int) -> bytes:
        return self._event("response.output_text.delta", **self._at(), delta=self.step_text(i), logprobs=[])

    def tail(self) -> bytes:
        done = "response.incomplete" if self.finish == "length" else "response.completed"
        return (self._event("response.output_text.done", **self._at(), text=self.content, logprobs=[])
                + self._event("response.content_part.done", **self._at(), part=self._part(self.content))
                + self._event("response.output_item.done", output_index=0, item=self._item(True))
                + self._event(done, response=self.response(True)))

    def error_frames(self) -> bytes:
        return self._event("error", code="server_error", message=MID_STREAM_ERROR, param=None)

    def malformed(self) -> bytes:
        return b'event: response.created\ndata: {"type": "response.created", \n\n' if self.stream else b'{"id": '
