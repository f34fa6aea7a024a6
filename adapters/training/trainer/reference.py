"""The reference trainer: ``python -m adapters.training.trainer``.

It honours ``adapters/training/contract.py`` end to end with numpy and safetensors only: reads the job's
environment, downloads the dataset (and, for a fine-tune, the base model), trains the byte-level model of
``model.py`` with Adam on mini-batches, reports metrics without ever waiting for the platform, checkpoints every
``checkpointEvery`` steps (a retried attempt resumes from the newest usable checkpoint), and uploads ``output/``
last. With ``WORLD_SIZE > 1`` the ranks train data-parallel (``dist.py``); only rank 0 reports, checkpoints and
uploads.

Hyperparameters (all optional): ``steps`` (200), ``batchSize`` (64), ``learningRate`` (0.003, cosine-decayed to a
tenth after a short warm-up), ``logEvery`` (10), ``evalEvery`` (50; the last step always evaluates),
``checkpointEvery`` (100; 0 = never), ``seed`` (0), ``textField``, ``maxTextBytes`` (64 MiB),
``connectTimeoutS`` (120) and ``stepTimeoutS`` (600) for the ranks of a distributed job.
**Fault injection, for tests:** ``failAtStep`` (exit after that step, its checkpoint stored) on the attempts in
``failOnAttempts`` (a list, one number or "1,2"; every attempt when absent) with ``exitCode`` (1);
``sleepPerStep`` (seconds) makes a job long enough to cancel or to restart the platform under.

Exit codes: 0 success; ``contract.EXIT_BAD_INPUT`` (2) for inputs that cannot be trained on; 1 for anything
else (the platform unreachable after retries, a rank lost).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.training.contract import EXIT_BAD_INPUT
from adapters.training.trainer.checkpoints import latest_checkpoint, restore_rng, rng_state, save_checkpoint
from adapters.training.trainer.client import ApiError, JobClient
from adapters.training.trainer.corpus import Corpus, Examples
from adapters.training.trainer.dist import DistError, Group, join_group
from adapters.training.trainer.jobenv import BadInput, Hyper, JobEnv, read_job_env
from adapters.training.trainer.model import (
    Adam,
    Arch,
    Params,
    config_bytes,
    init_params,
    load_tensors,
    loss_and_grads,
    loss_only,
    save_tensors,
)
from adapters.training.trainer.reporter import MetricsReporter
from adapters.training.trainer.texts import collect_texts

__all__ = ["TrainConfig", "main"]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    batch_size: int = 64
    learning_rate: float = 3e-3
    log_every: int = 10
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0
    text_field: str | None = None
    max_text_bytes: int = 64 * 1024 * 1024
    connect_timeout_s: float = 120.0
    step_timeout_s: float = 600.0
    fail_at_step: int | None = None
    fail_on_attempts: frozenset[int] | None = None
    exit_code: int = 1
    sleep_per_step: float = 0.0
    unknown: tuple[str, ...] = ()  # keys noted, not refused: other trainers take other hyperparameters

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any]) -> TrainConfig:
        h = Hyper(values)
        fail_at = h.get_int("failAtStep", 0, lo=0, hi=10_000_000)
        values_ = dict(
            steps=h.get_int("steps", cls.steps, lo=1, hi=10_000_000),
            batch_size=h.get_int("batchSize", cls.batch_size, lo=1, hi=65_536),
            learning_rate=h.get_float("learningRate", cls.learning_rate, lo=0.0, hi=10.0, open_lo=True),
            log_every=h.get_int("logEvery", cls.log_every, lo=1, hi=10_000_000),
            eval_every=h.get_int("evalEvery", cls.eval_every, lo=0, hi=10_000_000),
            checkpoint_every=h.get_int("checkpointEvery", cls.checkpoint_every, lo=0, hi=10_000_000),
            seed=h.get_int("seed", cls.seed, lo=0, hi=2 ** 32 - 1),
            text_field=h.get_str("textField"),
            max_text_bytes=h.get_int("maxTextBytes", cls.max_text_bytes, lo=1, hi=2 ** 31 - 1),
            connect_timeout_s=h.get_float("connectTimeoutS", cls.connect_timeout_s, lo=0.1, hi=3600.0),
            step_timeout_s=h.get_float("stepTimeoutS", cls.step_timeout_s, lo=1.0, hi=86_400.0),
            fail_at_step=fail_at or None,
            fail_on_attempts=h.get_ints("failOnAttempts"),
            exit_code=h.get_int("exitCode", 1, lo=1, hi=255),
            sleep_per_step=h.get_float("sleepPerStep", 0.0, lo=0.0, hi=3600.0),
        )
        return cls(**values_, unknown=tuple(h.unknown()))  # type: ignore[arg-type]

    def as_params(self) -> dict[str, Any]:
        return {"steps": self.steps, "batchSize": self.batch_size, "learningRate": self.learning_rate,
                "logEvery": self.log_every, "evalEvery": self.eval_every, "checkpointEvery": self.checkpoint_every,
                "seed": self.seed, "textField": self.text_field or ""}


def _say(message: str) -> None:
    print(f"[trainer] {message}", flush=True)


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over a tenth of the run (at most 20 steps), then cosine decay to a tenth."""
    warmup = max(1, min(20, config.steps // 10))
    if step <= warmup:
        return config.learning_rate * step / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.learning_rate * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _clip(grads: Params, max_norm: float = 1.0) -> None:
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm


def _evaluate(params: Params, arch: Arch, held_out: Examples) -> float:
    total, count = 0.0, 0
    for ctx, targets in held_out.chunks(1024):
        total += loss_only(params, arch, ctx, targets) * len(targets)
        count += len(targets)
    return total / max(1, count)


def _texts(client: JobClient, config: TrainConfig) -> list[str]:
    texts = collect_texts(client.dataset_rows(), config.text_field)
    kept: list[str] = []
    size = 0
    for text in texts:
        size += len(text.encode("utf-8", "replace"))
        if size > config.max_text_bytes and kept:
            _say(f"maxTextBytes {config.max_text_bytes} reached: training on the first {len(kept)} of "
                 f"{len(texts)} texts")
            break
        kept.append(text)
    return kept


def _base_model(client: JobClient) -> tuple[Arch, Params]:
    """A fine-tune's starting point: the base model's config and weights (``BadInput`` when it is not ours)."""
    names = client.model_files()
    if "config.json" not in names:
        raise BadInput("the base model has no config.json; use the Hugging Face trainer (train extra)")
    try:
        config = json.loads(client.model_file("config.json"))
    except ValueError:
        raise BadInput("the base model's config.json is not JSON") from None
    arch = Arch.from_config(config)
    weights = "model.safetensors" if "model.safetensors" in names else next(
        (n for n in names if n.endswith(".safetensors")), None)
    if weights is None:
        raise BadInput("the base model has no .safetensors weights")
    try:
        return arch, load_tensors(client.model_file(weights), arch)
    except ValueError as exc:
        raise BadInput(f"the base model's weights do not fit its config.json: {exc}") from None


def _start_state(env: JobEnv, client: JobClient, config: TrainConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Rank 0: the architecture, weights, optimizer moments and step training starts from."""
    if env.finetune:
        arch, params = _base_model(client)
        _say(f"fine-tuning base model {env.base_model_id} ({arch})")
    else:
        arch = Arch.from_spec(env.architecture)
        params = init_params(arch, rng)
    adam = Adam(params)
    step = 0
    if env.attempt > 1:
        resumed = latest_checkpoint(client, arch, _say)
        if resumed is None:
            _say(f"attempt {env.attempt}: no usable checkpoint; starting over")
        else:
            params, step = resumed.params, resumed.step
            adam = Adam(params)
            adam.load(resumed.optimizer)
            restore_rng(rng, resumed.state.get("rng"))
            _say(f"attempt {env.attempt}: resuming from {resumed.path} (step {step})")
    return {"arch": arch, "params": params, "optimizer": adam.tensors(), "step": step}


def _train(env: JobEnv, config: TrainConfig) -> int:
    client = JobClient(env.api_base_url, env.job_id, env.token)
    group: Group | None = None
    if env.world_size > 1:
        group = join_group(env.rank, env.world_size, env.master_addr, env.master_port, env.token,
                           connect_timeout_s=config.connect_timeout_s, step_timeout_s=config.step_timeout_s)
        _say(f"rank {env.rank} of {env.world_size} joined")
    lead = env.rank == 0
    reporter = MetricsReporter(client.metrics_url, client.auth_header) if lead else None
    try:
        return _run(env, config, client, group, reporter)
    finally:
        if reporter is not None:
            reporter.close()
            if reporter.dropped:
                _say(f"metrics: {reporter.sent} sent, {reporter.dropped} dropped (the platform did not take them)")
        if group is not None:
            group.close()


def _run(env: JobEnv, config: TrainConfig, client: JobClient, group: Group | None,
         reporter: MetricsReporter | None) -> int:
    rng = np.random.default_rng([config.seed, env.rank])
    texts = _texts(client, config)
    start = _start_state(env, client, config, rng) if env.rank == 0 else None
    if group is not None:
        start = group.broadcast(start)
    assert start is not None
    arch: Arch = start["arch"]
    params: Params = start["params"]
    adam = Adam(params)
    adam.load(start["optimizer"])
    first = int(start["step"]) + 1
    if env.rank != 0 and first > 1:  # a resumed worker must not replay the batches it drew before
        rng = np.random.default_rng([config.seed, env.rank, first])
    corpus = Corpus(texts, arch.context_length, config.seed)
    train = corpus.train.shard(env.rank, env.world_size)
    if len(train) == 0:
        raise BadInput("the dataset is too small to give every rank an example")
    if reporter is not None:
        reporter.log_params({**config.as_params(), **arch.as_params(), "trainer": "reference",
                             "jobType": env.job_type, "worldSize": env.world_size})
    _say(f"job {env.job_id} attempt {env.attempt}: {len(texts)} texts ({corpus.train_texts} train, "
         f"{corpus.held_out_texts} held out), {len(corpus.train)} training bytes, steps {first}..{config.steps}")
    if config.unknown and env.rank == 0:
        _say(f"hyperparameters not used by the reference trainer: {', '.join(config.unknown)}")
    window_losses: list[float] = []
    window_start, window_tokens = time.monotonic(), 0
    for step in range(first, config.steps + 1):
        ctx, targets = train.batch(rng, config.batch_size)
        loss, grads = loss_and_grads(params, arch, ctx, targets)
        if group is not None:
            loss, grads = group.average(loss, grads)
        _clip(grads)
        lr = _learning_rate(config, step)
        adam.step(params, grads, lr)
        window_losses.append(loss)
        window_tokens += len(targets) * env.world_size
        last = step == config.steps
        if reporter is not None and (step % config.log_every == 0 or step == first or last):
            elapsed = max(time.monotonic() - window_start, 1e-9)
            metrics = {"train_loss": float(np.mean(window_losses)), "learning_rate": lr,
                       "tokens_per_second": window_tokens / elapsed,
                       "epoch": step * config.batch_size * env.world_size / len(corpus.train)}
            if last or (config.eval_every and step % config.eval_every == 0):
                metrics["eval_loss"] = _evaluate(params, arch, corpus.held_out)
            reporter.log(metrics, step)
            _say(f"step {step}/{config.steps} " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            window_losses, window_start, window_tokens = [], time.monotonic(), 0
        elif reporter is not None and config.eval_every and step % config.eval_every == 0:
            reporter.log({"eval_loss": _evaluate(params, arch, corpus.held_out)}, step)
        if env.rank == 0 and config.checkpoint_every and step % config.checkpoint_every == 0 and not last:
            _checkpoint(client, step, params, adam, rng, env)
        if config.fail_at_step == step and (config.fail_on_attempts is None or env.attempt in config.fail_on_attempts):
            _say(f"fault injection: failing at step {step} on attempt {env.attempt} with exit code {config.exit_code}")
            return config.exit_code
        if config.sleep_per_step:
            time.sleep(config.sleep_per_step)
    if env.rank == 0:
        # output/ last, and config.json after the weights: a model in the catalog always has both.
        client.put_artifact("output/model.safetensors", save_tensors(params, {"format": "np"}))
        client.put_artifact("output/config.json", config_bytes(arch))
        _say(f"saved output/model.safetensors and output/config.json after step {config.steps}")
    return 0


def _checkpoint(client: JobClient, step: int, params: Params, adam: Adam, rng: np.random.Generator,
                env: JobEnv) -> None:
    """Best effort: a checkpoint that cannot be stored costs a resume point, not the attempt."""
    try:
        path = save_checkpoint(client, step, params, adam, {"attempt": env.attempt, "rng": rng_state(rng)})
        _say(f"checkpoint {path}")
    except ApiError as exc:
        _say(f"checkpoint at step {step} not stored ({exc}); training goes on")


def main() -> int:
    try:
        env = read_job_env()
        config = TrainConfig.from_hyperparameters(env.hyperparameters)
        return _train(env, config)
    except BadInput as exc:
        print(f"[trainer] bad input: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except (ApiError, DistError) as exc:
        print(f"[trainer] failed: {exc}", file=sys.stderr, flush=True)
        return 1
