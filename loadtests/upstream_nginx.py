"""A canned OpenAI-compatible upstream served by nginx, for load tests.

The benchmark needs an upstream that is never the bottleneck, so nginx answers
from memory: no Python, no I/O. Two loopback ports, both answering
`POST /v1/chat/completions`:

- the *chat* port returns one fixed `chat.completion` JSON (with usage);
- the *stream* port returns one fixed SSE body of `STREAM_CHUNKS` content
  chunks, a usage chunk and `data: [DONE]`, for stream throughput.

nginx runs in the foreground as a child process (`daemon off`, no master), so
`taskset` pins exactly one process and stopping it is one signal.

Run by hand: `python -m loadtests.upstream_nginx --port 8081 --stream-port 8082`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtests.procs import free_port, start_process, stop_process, wait_for_port

__all__ = [
    "CANNED_COMPLETION",
    "STREAM_CHUNKS",
    "NginxUpstream",
    "canned_sse_body",
    "nginx_config",
    "run_nginx",
]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_CHUNKS = 50

CANNED_COMPLETION: dict[str, object] = {
    "id": "chatcmpl-canned",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "canned",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the canned nginx upstream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
}


def canned_sse_body(chunks: int = STREAM_CHUNKS) -> str:
    """OpenAI-shaped SSE: role chunk, `chunks` one-token content chunks, usage, [DONE]."""

    def frame(delta: dict[str, str], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
        obj: dict[str, object] = {
            "id": "chatcmpl-canned",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "canned",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            obj["choices"] = []
            obj["usage"] = usage
        return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"

    parts = [frame({"role": "assistant", "content": ""})]
    parts += [frame({"content": f"tok{i} "}) for i in range(chunks)]
    parts.append(frame({}, finish="stop"))
    parts.append(frame({}, usage={"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


def _nginx_quote(text: str) -> str:
    # nginx single-quoted strings understand \\ \' \n \r \t; JSON never holds a raw quote here.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _split_return(text: str, var: str, piece_chars: int = 2000) -> tuple[str, str]:
    """nginx caps one config token at 4 KiB, so a long body is `set` in pieces and joined in `return`."""
    pieces = [text[i : i + piece_chars] for i in range(0, len(text), piece_chars)]
    sets = "\n".join(f"            set ${var}{i} {_nginx_quote(p)};" for i, p in enumerate(pieces))
    joined = '"' + "".join(f"${{{var}{i}}}" for i in range(len(pieces))) + '"'
    return sets, joined


def nginx_config(prefix: Path, chat_port: int, stream_port: int) -> str:
    """One worker, no logs, long keep-alive: the cheapest possible canned server."""
    body = _nginx_quote(json.dumps(CANNED_COMPLETION, separators=(",", ":")))
    sse_sets, sse = _split_return(canned_sse_body(), "sse")
    return f"""
daemon off;
master_process off;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 16m;
    server {{
        listen 127.0.0.1:{chat_port};
        location / {{
            default_type application/json;
            return 200 {body};
        }}
    }}
    server {{
        listen 127.0.0.1:{stream_port};
        location / {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
{sse_sets}
            return 200 {sse};
        }}
    }}
}}
"""


@dataclass(frozen=True)
class NginxUpstream:
    """Where the canned upstream listens; `chat_url`/`stream_url` end in `/v1` like an OpenAI base URL."""

    chat_port: int
    stream_port: int

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.chat_port}/v1"

    @property
    def stream_url(self) -> str:
        return f"http://127.0.0.1:{self.stream_port}/v1"


@contextmanager
def run_nginx(chat_port: int = 0, stream_port: int = 0, cpus: Sequence[int] | None = None) -> Iterator[NginxUpstream]:
    """Start nginx (ports 0 = pick free ones), yield where it listens, always stop it."""
    chat_port = chat_port or free_port()
    stream_port = stream_port or free_port()
    with tempfile.TemporaryDirectory(prefix="llmops-nginx-") as tmp:
        prefix = Path(tmp)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, chat_port, stream_port), encoding="utf-8")
        proc = start_process([NGINX, "-p", str(prefix), "-c", str(conf)], cpus=cpus, log=prefix / "stdout.log")
        try:
            wait_for_port(chat_port, proc=proc, timeout_s=10)
            wait_for_port(stream_port, proc=proc, timeout_s=10)
            yield NginxUpstream(chat_port, stream_port)
        finally:
            stop_process(proc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Canned nginx upstream for load tests (a test double).")
    parser.add_argument("--port", type=int, default=8081, help="chat.completion port")
    parser.add_argument("--stream-port", type=int, default=8082, help="canned SSE port")
    parser.add_argument("--duration", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    with run_nginx(args.port, args.stream_port) as up:
        print(f"nginx canned upstream: chat {up.chat_url}  stream {up.stream_url}", flush=True)
        deadline = time.monotonic() + args.duration
        try:
            while time.monotonic() < deadline:
                time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
