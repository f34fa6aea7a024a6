"""The routing benchmark's options (`python -m loadtests.routing_bench --help`) and the run they describe:
workload sizes, the simulator's parameters (every one recorded in the doc's section), users, pinning."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.routing_stats import MODES
from loadtests.routing_workload import WorkloadCfg, WorkloadName

__all__ = ["WORKLOADS", "BenchCfg", "bench_cfg", "parser"]

WORKLOADS: tuple[WorkloadName, ...] = ("shared", "random")
DESCRIPTION = ("Prefix-aware routing (issue 16): balance modes compared on simulated vLLM replicas with a prefix "
               "cache (a test double).")


@dataclass(frozen=True)
class BenchCfg:
    replicas: int
    duration_s: float
    warmup_s: float
    users: int
    think_s: float
    workload: WorkloadCfg
    sim: dict[str, Any]  # SimParams fields, as the simulator's CLI flags
    epsilon: float
    sample_interval_s: float
    prime: bool
    gateway_cpu: int | None
    load_cpu: int | None


def _default_cache_blocks(replicas: int, w: WorkloadCfg, block_tokens: int) -> int:
    """1.5 x each replica's share of the customers' contexts: enough for its share under affinity, far from
    all of them."""
    return int(1.5 * w.customers * -(-w.context_tokens // block_tokens) / replicas)


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    a, b = int(lo), int(hi or lo)
    if not 0 < a <= b:
        raise argparse.ArgumentTypeError(f"{text!r}: want LO-HI with 0 < LO <= HI")
    return a, b


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.routing_bench", description=DESCRIPTION)
    a = p.add_argument
    a("--replicas", type=int, default=8)
    a("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    a("--warmup", type=float, default=5.0, help="unmeasured seconds of load first (default 5)")
    a("--rounds", type=int, default=2)
    a("--users", type=int, default=150, help="closed-loop users (default 150)")
    a("--think", type=float, default=3.0, help="mean seconds a user waits between a reply and its next request")
    a("--modes", default=",".join(MODES), help="comma-separated balance modes (default all four)")
    a("--workloads", default=",".join(WORKLOADS))
    a("--customers", type=int, default=150)
    a("--context-tokens", type=int, default=6000, help="each customer's system prompt (default 6000)")
    a("--user-tokens", type=_range, default=(50, 100), help="a user message, LO-HI tokens (default 50-100)")
    a("--turns", type=_range, default=(3, 6), help="turns per conversation (default 3-6)")
    a("--random-tokens", type=_range, default=(1000, 6000), help="a random prompt (default 1000-6000)")
    a("--no-prime", action="store_true", help="do not send each customer's context once before the warm-up")
    a("--seed", type=int, default=0)
    a("--cache-blocks", type=int, help="per replica (default 1.5 x its share of the customers' contexts)")
    a("--max-num-seqs", type=int, default=16)
    a("--prefill-tokens-per-s", type=float, default=20000.0)
    a("--decode-tokens-per-s", type=float, default=50.0)
    a("--output-tokens", type=int, default=100)
    a("--stream-chunk-tokens", type=int, default=1)
    a("--block-tokens", type=int, default=16)
    a("--chars-per-token", type=int, default=4)
    a("--epsilon", type=float, default=0.25, help="prefix_affinity's load bound, and the bench's (default 0.25)")
    a("--sample-interval", type=float, default=0.25, help="seconds between queue samples (default 0.25)")
    a("--gateway-cpu", type=int, default=1, help="core for the gateway (default 1; -1: not pinned)")
    a("--load-cpu", type=int, default=0, help="core for the simulator and the users (default 0; -1: not pinned)")
    a("--doc", type=Path, help="write the table into this markdown file's routing section")
    return p


def bench_cfg(args: argparse.Namespace) -> BenchCfg:
    w = WorkloadCfg(customers=args.customers, context_tokens=args.context_tokens, user_tokens=args.user_tokens,
                    turns=args.turns, random_tokens=args.random_tokens, chars_per_token=args.chars_per_token,
                    seed=args.seed)
    sim = {"cache_blocks": args.cache_blocks or _default_cache_blocks(args.replicas, w, args.block_tokens),
           "max_num_seqs": args.max_num_seqs, "prefill_tokens_per_s": args.prefill_tokens_per_s,
           "decode_tokens_per_s": args.decode_tokens_per_s, "output_tokens": args.output_tokens,
           "stream_chunk_tokens": args.stream_chunk_tokens, "block_tokens": args.block_tokens,
           "chars_per_token": args.chars_per_token}
    return BenchCfg(replicas=args.replicas, duration_s=args.duration, warmup_s=args.warmup, users=args.users,
                    think_s=args.think, workload=w, sim=sim, epsilon=args.epsilon,
                    sample_interval_s=args.sample_interval, prime=not args.no_prime,
                    gateway_cpu=None if args.gateway_cpu < 0 else args.gateway_cpu,
                    load_cpu=None if args.load_cpu < 0 else args.load_cpu)
