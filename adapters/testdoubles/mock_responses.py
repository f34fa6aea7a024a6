"""Wire bodies of the mock upstream: OpenAI chat completions (JSON + SSE) and Ollama /api/chat (NDJSON).

Both dialects expose the same small surface (`body`, `head`, `step`, `tail`,
`error_frames`, `malformed`) so the handler runs one fault/pacing loop for
both. The answer is deterministic: a fixed word cycle, one "token" per word,
so tests can predict content and usage exactly; or, when a `MockConfig.script` rule
matches the request, that rule's reply text, one token per whitespace-separated word.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from itertools import cycle, islice
from typing import Any

import msgspec

from adapters.testdoubles.mock_state import MockConfig

__all__ = [
    "WORDS",
    "BadRequest",
    "OllamaReply",
    "OpenAIReply",
    "answer_pieces",
    "answer_words",
    "count_prompt_tokens",
    "last_user_text",
    "ollama_error",
    "openai_error",
    "openai_usage",
    "scripted_reply",
    "split_pieces",
]

WORDS = ("mock", "token", "reply", "from", "the", "test", "double", "upstream")
MID_STREAM_ERROR = "mock mid-stream failure"
_encode = msgspec.json.Encoder().encode


class BadRequest(ValueError):
    """The request body is not a valid chat request; answered with 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


_PIECE = re.compile(r"\s*\S+")


@lru_cache(maxsize=64)
def answer_words(n: int) -> tuple[str, ...]:
    return tuple(islice(cycle(WORDS), n))


@lru_cache(maxsize=64)
def answer_pieces(n: int) -> tuple[str, ...]:
    """The word cycle as tokens that concatenate to the answer: a space before every word but the first."""
    return tuple(w if i == 0 else " " + w for i, w in enumerate(answer_words(n)))


def split_pieces(text: str) -> tuple[str, ...]:
    """`text` as tokens, one per whitespace-separated word with the whitespace before it (any trailing
    whitespace rides on the last), so `"".join(split_pieces(t)) == t` for every `t`."""
    pieces = _PIECE.findall(text)
    if not pieces:
        return (text,) if text else ()
    rest = len(text) - sum(map(len, pieces))
    if rest:
        pieces[-1] += text[-rest:]
    return tuple(pieces)


def scripted_reply(cfg: MockConfig, text: str) -> str | None:
    """The first `cfg.script` rule's reply whose `match` is `"*"` or a substring of `text`; None: no rule matched."""
    for rule in cfg.script:
        if rule.match == "*" or rule.match in text:
            return rule.reply
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text parts count
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[Any]) -> str:
    """The text of the last `user` message ("" when there is none): what a script rule matches in a chat."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def count_prompt_tokens(messages: list[Any]) -> int:
    """Whitespace words of every message plus one per message (a stand-in for role tokens)."""
    return sum(len(_text_of(m.get("content")).split()) + 1 for m in messages if isinstance(m, dict))


def openai_error(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    return _encode({"error": {"message": message, "type": kind, "param": param, "code": code}})


def ollama_error(message: str) -> bytes:
    return _encode({"error": message})  # Ollama's own error shape is a bare string


def openai_usage(cfg: MockConfig, prompt: int, visible: int) -> dict[str, Any]:
    """OpenAI's chat/completions `usage`: `visible` generated tokens plus the configured hidden
    reasoning ones; the details (cached reads, cache writes, reasoning) only when configured."""
    completion = visible + cfg.reasoning_tokens
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cfg.cached_tokens or cfg.cache_write_tokens or cfg.reasoning_tokens:
        cached = min(cfg.cached_tokens, prompt)
        details: dict[str, int] = {"cached_tokens": cached, "audio_tokens": 0}
        if cfg.cache_write_tokens:
            details["cache_write_tokens"] = min(cfg.cache_write_tokens, prompt - cached)
        out["prompt_tokens_details"] = details
        out["completion_tokens_details"] = {"reasoning_tokens": cfg.reasoning_tokens, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    return out


def _cap(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{param} must be an integer", param)
    return value


def _messages(body: dict[str, Any]) -> list[Any]:
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list", "messages")
    return messages


class _Reply:
    """Token plan shared by every dialect: which tokens, in which content steps, why it stopped.

    `pieces` are the answer's tokens as text (`"".join(pieces) == content`): the word cycle, or the
    reply of the first script rule matching `match_text` (None: the request is never scripted).
    """

    def __init__(self, cfg: MockConfig, model: str, messages: list[Any], limit: int | None,
                 match_text: str | None = None) -> None:
        self.cfg = cfg
        reply = scripted_reply(cfg, match_text) if cfg.script and match_text is not None else None
        script = split_pieces(reply) if reply is not None else None
        n = cfg.completion_tokens if script is None else len(script)
        self.finish = "stop"
        if limit is not None and 0 <= limit < n:
            n, self.finish = limit, "length"
        self.pieces = answer_pieces(n) if script is None else script[:n]
        self.model = cfg.model_name or model
        self.prompt_tokens = count_prompt_tokens(messages)
        self.chunk_tokens = max(1, cfg.chunk_tokens)
        self.steps = -(-len(self.pieces) // self.chunk_tokens)

    @property
    def content(self) -> str:
        return "".join(self.pieces)

    def step_text(self, i: int) -> str:
        """Tokens of content step i, separators included, so concatenated deltas equal `content`."""
        k = self.chunk_tokens
        return "".join(self.pieces[i * k : (i + 1) * k])


class OpenAIReply(_Reply):
    content_type = "application/json"
    stream_content_type = "text/event-stream"

    def __init__(self, cfg: MockConfig, body: dict[str, Any]) -> None:
        messages = _messages(body)
        limit = _cap(body.get("max_completion_tokens"), "max_completion_tokens")
        if limit is None:
            limit = _cap(body.get("max_tokens"), "max_tokens")
        super().__init__(cfg, body["model"], messages, limit, last_user_text(messages) if cfg.script else None)
        n = _cap(body.get("n"), "n")
        self.n = 1 if n is None else n
        if self.n < 1:
            raise BadRequest("n must be at least 1", "n")
        self.stream = body.get("stream") is True
        opts = body.get("stream_options")
        include = isinstance(opts, dict) and opts.get("include_usage") is True
        self.usage_chunk = include and cfg.usage
        self.report_usage = cfg.usage
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "mock"}
        # Every chunk shares this prefix; OpenAI adds `"usage": null` to them when usage was requested.
        self._prefix = b"data: " + _encode(head)[:-1] + b',"choices":['
        self._suffix = b'],"usage":null}\n\n' if include else b"]}\n\n"

    def usage(self) -> dict[str, Any]:
        return openai_usage(self.cfg, self.prompt_tokens, len(self.pieces) * self.n)

    def body(self) -> bytes:
        message = {"role": "assistant", "content": self.content}
        out: dict[str, Any] = {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": self.finish}
                        for i in range(self.n)],
            "system_fingerprint": "mock",
        }
        if self.report_usage:
            out["usage"] = self.usage()
        return _encode(out)

    def _frames(self, delta: dict[str, Any], finish: str | None = None, n: int | None = None) -> bytes:
        return b"".join(
            self._prefix
            + _encode({"index": i, "delta": delta, "logprobs": None, "finish_reason": finish})
            + self._suffix
            for i in range(self.n if n is None else n)
        )

    def head(self) -> bytes:
        return self._frames({"role": "assistant", "content": ""})  # role first, as OpenAI's stream does

    def step(self, i: int) -> bytes:
        return self._frames({"content": self.step_text(i)})

    def tail(self) -> bytes:
        if self.usage_chunk and self.cfg.usage_on_last_choice:  # usage rides on the (last) finish chunk
            last = _encode({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "system_fingerprint": "mock",
                            "choices": [{"index": self.n - 1, "delta": {}, "logprobs": None,
                                         "finish_reason": self.finish}], "usage": self.usage()})
            return self._frames({}, self.finish, self.n - 1) + b"data: " + last + b"\n\ndata: [DONE]\n\n"
        out = self._frames({}, self.finish)
        if self.usage_chunk:
            usage = _encode({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "system_fingerprint": "mock", "choices": [],
                             "usage": self.usage()})
            out += b"data: " + usage + b"\n\n"
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error_frames() -> bytes:
        """A failure after the headers went out can only be an error frame, then [DONE]."""
        return b"data: " + openai_error(MID_STREAM_ERROR, "server_error") + b"\n\ndata: [DONE]\n\n"

    def malformed(self) -> bytes:
        if self.stream:
            return b'data: {"id": "chatcmpl-x", "choices": [\n\ndata: [DONE]\n\n'
        return b'{"id": "chatcmpl-x", "choices": ['

    @staticmethod
    def error_body(status: int, message: str, param: str | None = None) -> bytes:
        if status == 429:
            return openai_error(message, "requests", "rate_limit_exceeded")
        if status == 401:
            return openai_error(message, "invalid_request_error", "invalid_api_key")
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return openai_error(message, kind, None, param)


class OllamaReply(_Reply):
    content_type = "application/json"
    stream_content_type = "application/x-ndjson"

    def __init__(self, cfg: MockConfig, body: dict[str, Any]) -> None:
        messages = _messages(body)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("options must be an object", "options")
        limit = _cap(options.get("num_predict"), "num_predict")
        super().__init__(cfg, body["model"], messages, None if limit is not None and limit < 0 else limit,
                         last_user_text(messages) if cfg.script else None)
        self.stream = body.get("stream", True) is not False  # Ollama streams unless told not to
        self.tokens_per_s = cfg.tokens_per_s
        self._created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def _line(self, content: str, done: bool) -> dict[str, Any]:
        return {"model": self.model, "created_at": self._created_at,
                "message": {"role": "assistant", "content": content}, "done": done}

    def _final(self, content: str) -> dict[str, Any]:
        eval_ns = int(len(self.pieces) * (1e9 / self.tokens_per_s if self.tokens_per_s > 0 else 1e6))
        prompt_ns = self.prompt_tokens * 100_000
        out = self._line(content, True)
        out.update(done_reason=self.finish, total_duration=eval_ns + prompt_ns + 1_000_000,
                   load_duration=1_000_000, prompt_eval_count=self.prompt_tokens,
                   prompt_eval_duration=prompt_ns, eval_count=len(self.pieces), eval_duration=eval_ns)
        if not self.cfg.usage:  # as Ollama's omitempty does when the whole prompt came from its KV cache
            del out["prompt_eval_count"], out["prompt_eval_duration"]
        return out

    def body(self) -> bytes:
        return _encode(self._final(self.content))

    def head(self) -> bytes:
        return b""

    def step(self, i: int) -> bytes:
        return _encode(self._line(self.step_text(i), False)) + b"\n"

    def tail(self) -> bytes:
        return _encode(self._final("")) + b"\n"

    @staticmethod
    def error_frames() -> bytes:
        return ollama_error(MID_STREAM_ERROR) + b"\n"

    def malformed(self) -> bytes:
        return b'{"model": "x", "message": {\n' if self.stream else b'{"model": "x", "message": {'

    @staticmethod
    def error_body(status: int, message: str, param: str | None = None) -> bytes:
        return ollama_error(message)
