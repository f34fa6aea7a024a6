"""Simulated vLLM replicas with a prefix cache. A TEST DOUBLE, not a model.

It exists to show, with numbers, what routing does to a fleet of vLLM replicas (prefix-aware routing against
round robin or least-loaded) without a GPU. Each replica is its own HTTP server on its own loopback port
(`VllmSim.urls`, one `http://127.0.0.1:P/v1` each), all in one process and one event loop. What it models, and
the choices made (every number is a `SimParams` field):

- Prompt: the chat messages rendered with a fixed template, `<|role|>\\n{content}<|end|>\\n` per message and
  `<|assistant|>\\n` after them (of list contents only the text parts count). A token is `chars_per_token`
  characters: prompt tokens = ceil(characters / chars_per_token). The request's `model` is not checked.
- Prefix cache, per replica: blocks of `block_tokens` tokens, only full ones, each hashed over (its parent's
  hash, its text) as vLLM's prefix caching does, in an LRU of `cache_blocks` hashes. A request's cached prefix
  is its leading blocks found in the cache, up to the first miss; as in vLLM the last prompt token is always
  computed, so a wholly cached prompt still prefills its last block. Blocks of running sequences are pinned
  and never evicted; if all are pinned the cache briefly holds more than `cache_blocks` (vLLM would preempt;
  the simulator does not). When a sequence ends, its blocks return to the LRU tail-first, so a prefix's tail
  is evicted before its head; a finished answer's blocks (prompt, answer, `<|end|>\\n`: what the next turn
  renders) are cached too, so the next turn of a conversation hits on the reply it sends back.
- Scheduling, per replica: at most `max_num_seqs` sequences run; later requests wait first come first served
  (`vllm:num_requests_waiting`). One prefill at a time (compute-bound), in arrival order, taking
  uncached tokens / `prefill_tokens_per_s` + `prefill_overhead_s`; waiting for it counts as running, as a
  scheduled request does in vLLM. TTFT = wait for a slot + wait for the prefill + the prefill. The first token
  comes with the prefill; the others decode at `decode_tokens_per_s` per sequence, concurrently, unslowed by
  batch size. Time is the event loop's (`asyncio.sleep`), so the double costs little CPU.
- Answer: `max_completion_tokens` or `max_tokens` (finish reason `length`), else `output_tokens` (`stop`),
  capped at `max_output_tokens`, a deterministic word cycle, one word per token; usage carries
  `prompt_tokens_details.cached_tokens` as vLLM's does. Streams: a role chunk, one content chunk per
  `stream_chunk_tokens` tokens, a finish chunk, a usage chunk if `stream_options.include_usage`, `[DONE]`.
  A client that hangs up frees its slot and its pins; its answer is not cached.
- Endpoints per replica: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, `GET /metrics`
  (vLLM's names: running/waiting gauges, `gpu_cache_usage_perc` and `kv_cache_usage_perc` = cached blocks /
  `cache_blocks`, prefix-cache queries and hits counted in tokens, request successes, a TTFT histogram), and
  the double's own `GET /sim/stats` and `POST /sim/reset` (409 while busy). Bad bodies get 400, OpenAI-shaped.

CLI: `python -m adapters.testdoubles.vllm_sim --replicas 8 --cache-blocks 4096 ...` (every `SimParams` field as
a flag) prints one JSON line, `{"urls": [...], "params": {...}}`, once every replica accepts connections, and
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from types import TracebackType
from typing import Self

import msgspec
from aiohttp import web

from adapters.testdoubles.http_site import SiteServer
from adapters.testdoubles.vllm_sim_http import build_app
from adapters.testdoubles.vllm_sim_model import SimParams
from adapters.testdoubles.vllm_sim_replica import ReplicaEngine, ReplicaStats

__all__ = ["ReplicaServer", "SimParams", "VllmSim", "main"]


class ReplicaServer(SiteServer):
    """One replica on its own loopback port."""

    def __init__(self, params: SimParams, index: int, host: str = "127.0.0.1") -> None:
        self.engine = ReplicaEngine(params, index)
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stats(self) -> ReplicaStats:
        return self.engine.stats()

    async def start(self, port: int = 0) -> None:
        await self._serve(build_app(self.engine), port, handler_cancellation=True)


class VllmSim:
    """`params.replicas` simulated replicas; `async with VllmSim(...) as sim` starts and stops them all."""

    def __init__(self, params: SimParams | None = None, host: str = "127.0.0.1") -> None:
        self.params = params or SimParams()
        self.replicas = [ReplicaServer(self.params, i, host) for i in range(self.params.replicas)]

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    async def start(self) -> None:
        try:
            for replica in self.replicas:
                await replica.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.testdoubles.vllm_sim",
        description="Simulated vLLM replicas with a prefix cache: a TEST DOUBLE, not a model. Prints one JSON "
                    "line {\"urls\": [...], \"params\": {...}} once serving; stops on SIGTERM/SIGINT.")
    defaults = SimParams()
    for f in msgspec.structs.fields(SimParams):
        default = getattr(defaults, f.name)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(default), default=default,
                            help=f"default {default}")
    return parser


async def _serve(params: SimParams) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with VllmSim(params) as sim:
        # Printed once signals are handled, so a supervisor may stop us as soon as it reads this line.
        line = msgspec.json.encode({"urls": sim.urls, "params": params}).decode()
        print(line, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        params = SimParams(**vars(args))
    except ValueError as exc:
        print(f"vllm_sim: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
