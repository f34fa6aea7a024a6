"""`llmops mock-upstream`: run the mock upstream (a TEST DOUBLE) as its own process."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable

from adapters.testdoubles.mock_state import MockConfig

__all__ = ["HELP_TEXT", "add_cli_arguments", "run_from_args"]

HELP_TEXT = (
    "Run the mock upstream: a TEST DOUBLE, not a model. It speaks the OpenAI chat completions API "
    "(/v1/chat/completions, streaming and not, /v1/models) and Ollama's /api/chat, and answers every "
    "request with the same deterministic filler words (\"mock token reply ...\"), so its output means "
    "nothing. Use it to exercise the gateway, demos and benchmarks without a GPU or an API key. Faults "
    "can be injected with --faults only: per request (header `x-mock-fault: status=503`, or model "
    "`fault:timeout=5`, `slow:1.5`) or over HTTP (POST /_mock/faults, /_mock/config, /_mock/reset; "
    "GET /_mock/requests). With --faults, POST /_mock/config {\"script\": [{\"match\": \"...\", \"reply\": "
    "\"...\"}]} scripts answers (first rule whose match is in the last user message, or \"*\"), and "
    "{\"logprobs\": false} makes /v1/completions refuse logprobs. "
    "GET /metrics exports vLLM-style queue gauges."
)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    d = MockConfig()
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port (default 8100)")
    parser.add_argument("--latency-s", type=float, default=d.latency_s,
                        help="delay before response headers (default 0)")
    parser.add_argument("--tokens-per-s", type=float, default=d.tokens_per_s,
                        help="stream pacing in words per second; 0 = as fast as possible (default 0)")
    parser.add_argument("--completion-tokens", type=int, default=d.completion_tokens,
                        help=f"words per answer, capped by max_tokens (default {d.completion_tokens})")
    parser.add_argument("--chunk-tokens", type=int, default=d.chunk_tokens,
                        help=f"words per stream chunk (default {d.chunk_tokens})")
    parser.add_argument("--no-usage", action="store_true", help="omit usage from responses")
    parser.add_argument("--api-key", default=None, help="require `Authorization: Bearer <key>`")
    parser.add_argument("--model-name", default=None,
                        help="model reported in responses (default: echo the request's model)")
    parser.add_argument("--faults", action="store_true",
                        help="enable fault injection over HTTP (x-mock-fault, fault:/slow: models, /_mock/*)")
    parser.add_argument("--vllm-waiting", type=int, default=0,
                        help="value exported as vllm:num_requests_waiting on /metrics (default 0)")


def _config_from_args(args: argparse.Namespace) -> MockConfig:
    return MockConfig(
        latency_s=args.latency_s, tokens_per_s=args.tokens_per_s, completion_tokens=args.completion_tokens,
        chunk_tokens=args.chunk_tokens, usage=not args.no_usage, api_key=args.api_key,
        model_name=args.model_name, vllm_waiting=getattr(args, "vllm_waiting", 0),
        faults=getattr(args, "faults", False),
    )


async def _serve(config: MockConfig, host: str, port: int) -> None:
    from adapters.testdoubles.mock_upstream import start_mock_upstream  # avoids an import cycle

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await start_mock_upstream(config, host, port)
    # Printed only once signals are handled, so a supervisor may stop us as soon as it reads this line.
    print(f"mock upstream (TEST DOUBLE) listening on {server.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_from_args(args: argparse.Namespace) -> None:
    """Blocking: serve until SIGINT/SIGTERM."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(_config_from_args(args), args.host, args.port))
