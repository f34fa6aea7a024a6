"""The Hugging Face trainer: ``python -m adapters.training.trainer.hf`` (the ``train`` extra: torch,
transformers, TRL, accelerate, datasets, mlflow-skinny). It is the Kubernetes trainer image's command.

Same contract as the reference trainer (``reference.py``): a fine-tune downloads the base model's files
(``inputs/model``) and continues it with TRL's ``SFTTrainer``; ``from_scratch``/``pretrain`` build the model from
``AutoConfig.for_model(architecture["modelType"], **the rest)`` and, unless the architecture names a
``tokenizer`` to download, a byte-level BPE tokenizer trained on the job's texts (``vocabSize``, default 8192).
Rows become text by the same rules (``texts.py``). Metrics: with ``MLFLOW_TRACKING_URI`` set (the platform sets
it), ``report_to=["mlflow"]`` and Hugging Face's MLflow callback logs into the job's run (``MLFLOW_RUN_ID``)
unchanged; without it, a callback posts the logs to the job's ``metrics`` endpoint through the non-blocking
reporter. Checkpoints are uploaded by ``on_save`` to ``checkpoints/step-<n>/`` (``trainer_state.json`` last); a
retried attempt downloads the newest complete one and resumes from it. The model is saved with
``save_pretrained(safe_serialization=True)`` plus its tokenizer and uploaded under ``output/``, ``config.json``
last. Under ``torchrun``-style variables (``WORLD_SIZE > 1``) accelerate runs data parallel; rank 0 uploads.

Hyperparameters: ``steps`` (max_steps; default: ``epochs``, 1), ``batchSize`` (8), ``learningRate`` (2e-5 for a
fine-tune, 5e-4 otherwise), ``logEvery`` (10), ``evalEvery`` (0: once at the end), ``checkpointEvery`` (500;
0 = never), ``seed``, ``textField``, ``maxLength`` (512), ``gradientAccumulationSteps`` (1), ``warmupRatio``
(0), ``weightDecay`` (0), and the reference trainer's fault injection (``failAtStep``, ``failOnAttempts``,
``exitCode``, ``sleepPerStep``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from adapters.training.contract import EXIT_BAD_INPUT
from adapters.training.trainer.client import ApiError, JobClient
from adapters.training.trainer.jobenv import BadInput, Hyper, JobEnv, read_job_env
from adapters.training.trainer.reporter import MetricsReporter
from adapters.training.trainer.texts import collect_texts

__all__ = ["HfConfig", "main"]

_REFERENCE_TYPE = "llmops-byte-mlp"
_CHECKPOINTS = "checkpoints/"


class _InjectedFault(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _say(message: str) -> None:
    print(f"[hf-trainer] {message}", flush=True)


@dataclass(frozen=True)
class HfConfig:
    steps: int
    epochs: float
    batch_size: int
    learning_rate: float
    log_every: int
    eval_every: int
    checkpoint_every: int
    seed: int
    text_field: str | None
    max_length: int
    grad_accumulation: int
    warmup_ratio: float
    weight_decay: float
    fail_at_step: int | None
    fail_on_attempts: frozenset[int] | None
    exit_code: int
    sleep_per_step: float

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any], *, finetune: bool) -> HfConfig:
        h = Hyper(values)
        return cls(
            steps=h.get_int("steps", -1, lo=-1, hi=100_000_000), epochs=h.get_float("epochs", 1.0, lo=0.0, hi=1e4),
            batch_size=h.get_int("batchSize", 8, lo=1, hi=65_536),
            learning_rate=h.get_float("learningRate", 2e-5 if finetune else 5e-4, lo=0.0, hi=10.0, open_lo=True),
            log_every=h.get_int("logEvery", 10, lo=1, hi=10_000_000),
            eval_every=h.get_int("evalEvery", 0, lo=0, hi=10_000_000),
            checkpoint_every=h.get_int("checkpointEvery", 500, lo=0, hi=10_000_000),
            seed=h.get_int("seed", 0, lo=0, hi=2 ** 32 - 1), text_field=h.get_str("textField"),
            max_length=h.get_int("maxLength", 512, lo=8, hi=1_000_000),
            grad_accumulation=h.get_int("gradientAccumulationSteps", 1, lo=1, hi=100_000),
            warmup_ratio=h.get_float("warmupRatio", 0.0, lo=0.0, hi=1.0),
            weight_decay=h.get_float("weightDecay", 0.0, lo=0.0, hi=10.0),
            fail_at_step=h.get_int("failAtStep", 0, lo=0, hi=100_000_000) or None,
            fail_on_attempts=h.get_ints("failOnAttempts"), exit_code=h.get_int("exitCode", 1, lo=1, hi=255),
            sleep_per_step=h.get_float("sleepPerStep", 0.0, lo=0.0, hi=3600.0),
        )


def _modules() -> SimpleNamespace:
    """The train extra, imported on first use (``BadInput`` when it is not installed: a retry cannot help)."""
    try:
        return SimpleNamespace(**{name: importlib.import_module(name) for name in (
            "torch", "transformers", "trl", "datasets", "tokenizers")})
    except ImportError as exc:
        raise BadInput(f"the Hugging Face trainer needs the train extra ({exc.name} is not installed)") from None


def _supported(factory: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``factory`` takes: transformers and TRL rename them between versions."""
    names = set(inspect.signature(factory).parameters)
    return {k: v for k, v in kwargs.items() if k in names}


def _safe_relative(path: str) -> bool:
    """A relative path that stays below the directory it is written into."""
    return bool(path) and not path.startswith("/") and all(seg not in ("", ".", "..") for seg in path.split("/"))


def _download_base(client: JobClient, into: Path) -> Path:
    names = client.model_files()
    if "config.json" not in names:
        raise BadInput("the base model has no config.json")
    into.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not _safe_relative(name) or "/" in name:
            raise BadInput(f"the base model has a file name that cannot be saved here: {name[:80]!r}")
        (into / name).write_bytes(client.model_file(name))
    config = json.loads((into / "config.json").read_text())
    if isinstance(config, dict) and config.get("model_type") == _REFERENCE_TYPE:
        raise BadInput("the base model was made by the reference trainer; train it with trainer 'reference'")
    return into


def _tokenizer_from_texts(m: SimpleNamespace, texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on the job's own texts (no download needed for a model from scratch)."""
    tok = m.tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    fast = m.transformers.PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, eos_token="<|endoftext|>",
                                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.pad_token = fast.eos_token
    return fast


def _model_and_tokenizer(m: SimpleNamespace, env: JobEnv, client: JobClient, texts: list[str],
                         work: Path) -> tuple[Any, Any]:
    if env.finetune:
        base = _download_base(client, work / "base")
        try:
            tokenizer = m.transformers.AutoTokenizer.from_pretrained(str(base))
        except (OSError, ValueError) as exc:
            raise BadInput(f"the base model has no usable tokenizer ({type(exc).__name__})") from None
        model = m.transformers.AutoModelForCausalLM.from_pretrained(str(base))
        _say(f"fine-tuning base model {env.base_model_id} ({type(model).__name__})")
    else:
        arch = dict(env.architecture)
        model_type = arch.pop("modelType", None) or arch.pop("model_type", None)
        if not isinstance(model_type, str):
            raise BadInput("architecture modelType (a transformers model type, e.g. gpt2 or llama) is required")
        name = arch.pop("tokenizer", None)
        vocab = int(arch.pop("vocabSize", arch.pop("vocab_size", 8192)))
        tokenizer = m.transformers.AutoTokenizer.from_pretrained(name) if isinstance(name, str) else \
            _tokenizer_from_texts(m, texts, vocab)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad")}
        try:
            config = m.transformers.AutoConfig.for_model(model_type, **{"vocab_size": len(tokenizer), **special,
                                                                         **arch})
        except (ValueError, TypeError) as exc:
            raise BadInput(f"architecture: {str(exc)[:200]}") from None
        model = m.transformers.AutoModelForCausalLM.from_config(config)
        _say(f"training {model_type} from scratch ({sum(p.numel() for p in model.parameters())} parameters)")
    return model, tokenizer


def _upload_dir(client: JobClient, local: Path, prefix: str, last: str) -> None:
    """Every file under ``local`` to ``prefix``/…, the file named ``last`` after the others."""
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name == last, str(p)))
    for path in files:
        client.put_artifact(f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())


def _resume_dir(client: JobClient, output_dir: Path) -> Path | None:
    """The newest complete checkpoint, downloaded as ``checkpoint-<n>`` (what ``resume_from_checkpoint`` takes)."""
    steps: dict[int, list[str]] = {}
    for f in client.list_artifacts(_CHECKPOINTS):
        parts = str(f.get("path", "")).split("/")
        if len(parts) >= 3 and parts[1].startswith("step-") and parts[1][5:].isdigit():
            steps.setdefault(int(parts[1][5:]), []).append(str(f["path"]))
    for step in sorted(steps, reverse=True):
        if f"{_CHECKPOINTS}step-{step}/trainer_state.json" not in steps[step]:
            _say(f"checkpoint step-{step} is incomplete; skipped")
            continue
        target = output_dir / f"checkpoint-{step}"
        try:
            for path in steps[step]:
                if not _safe_relative(path):
                    raise ApiError(f"unexpected artifact path {path[:80]!r}")
                local = target / path.split("/", 2)[2]
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(client.artifact(path))
        except ApiError as exc:
            _say(f"checkpoint step-{step} cannot be downloaded ({exc}); skipped")
            shutil.rmtree(target, ignore_errors=True)
            continue
        return target
    return None


def _callbacks(m: SimpleNamespace, env: JobEnv, config: HfConfig, client: JobClient,
               reporter: MetricsReporter | None) -> list[Any]:
    base = m.transformers.TrainerCallback

    class Uploader(base):  # type: ignore[misc, valid-type]
        """Each saved checkpoint to the object store, from rank 0 (best effort: a lost upload costs a resume point)."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            try:
                _upload_dir(client, local, f"{_CHECKPOINTS}step-{state.global_step}", "trainer_state.json")
                _say(f"checkpoint checkpoints/step-{state.global_step}")
            except (ApiError, OSError) as exc:
                _say(f"checkpoint at step {state.global_step} not stored ({exc}); training goes on")

    class Faults(base):  # type: ignore[misc, valid-type]
        """Fault injection for tests: fail once step ``failAtStep`` (and its checkpoint) is done; slow steps."""

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            attempts = config.fail_on_attempts
            if config.fail_at_step and state.global_step == config.fail_at_step and (
                    attempts is None or env.attempt in attempts):
                _say(f"fault injection: failing at step {state.global_step} on attempt {env.attempt}")
                raise _InjectedFault(config.exit_code)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if config.sleep_per_step:
                time.sleep(config.sleep_per_step)

    class Metrics(base):  # type: ignore[misc, valid-type]
        """Trainer logs to the job's metrics endpoint (only without MLflow, which would log them twice)."""

        last: tuple[float, float] | None = None  # (monotonic time, num_tokens) of the previous log

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if reporter is None or not state.is_world_process_zero or not logs:
                return
            values = {("train_loss" if k == "loss" else k): float(v) for k, v in logs.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}
            if "train_runtime" in values:  # the end-of-training summary: its train_loss is the run's average
                values.pop("train_loss", None)
            tokens = values.get("num_tokens")
            if tokens is not None:
                now = time.monotonic()
                if self.last is not None and now > self.last[0] and tokens > self.last[1]:
                    values["tokens_per_second"] = (tokens - self.last[1]) / (now - self.last[0])
                self.last = (now, tokens)
            reporter.log(values, state.global_step)

    callbacks = [Uploader(), Faults()]
    if reporter is not None:
        callbacks.append(Metrics())
    return callbacks


def _split(texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    if len(texts) < 2:
        return texts, []
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(texts) * 0.1))
    return [texts[i] for i in sorted(order[held:])], [texts[i] for i in sorted(order[:held])]


def _train(env: JobEnv, config: HfConfig, work: Path) -> int:
    m = _modules()
    client = JobClient(env.api_base_url, env.job_id, env.token)
    texts = collect_texts(client.dataset_rows(), config.text_field)
    model, tokenizer = _model_and_tokenizer(m, env, client, texts, work)
    train_texts, eval_texts = _split(texts, config.seed)
    use_mlflow = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    lead = env.rank == 0
    reporter = MetricsReporter(client.metrics_url, client.auth_header) if lead and not use_mlflow else None
    if reporter is not None:
        reporter.log_params({"trainer": "huggingface", "jobType": env.job_type, "worldSize": env.world_size,
                             **{k: v for k, v in env.hyperparameters.items() if isinstance(v, str | int | float)}})
    output_dir = work / "run"
    evaluate = bool(eval_texts) and config.eval_every > 0
    args: dict[str, Any] = {
        "output_dir": str(output_dir), "max_steps": config.steps, "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size, "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accumulation, "learning_rate": config.learning_rate,
        "warmup_ratio": config.warmup_ratio, "weight_decay": config.weight_decay, "seed": config.seed,
        "logging_steps": config.log_every, "logging_first_step": True,
        "eval_strategy": "steps" if evaluate else "no", "eval_steps": config.eval_every or None,
        "save_strategy": "steps" if config.checkpoint_every else "no", "save_steps": config.checkpoint_every or 500,
        "save_total_limit": 2, "report_to": ["mlflow"] if use_mlflow else [], "run_name": env.job_id,
        "dataset_text_field": "text", "max_length": config.max_length, "max_seq_length": config.max_length,
        "packing": False, "disable_tqdm": True, "use_cpu": not m.torch.cuda.is_available(),
        "bf16": bool(m.torch.cuda.is_available() and m.torch.cuda.is_bf16_supported()),
    }
    config_args = _supported(m.trl.SFTConfig, args)
    if "warmup_ratio" not in config_args and config.warmup_ratio:
        config_args["warmup_steps"] = config.warmup_ratio  # transformers 5: a float below 1 is a ratio
    sft_config = m.trl.SFTConfig(**config_args)
    dataset = m.datasets.Dataset.from_dict({"text": train_texts})
    trainer_kwargs: dict[str, Any] = {
        "model": model, "args": sft_config, "train_dataset": dataset,
        "eval_dataset": m.datasets.Dataset.from_dict({"text": eval_texts}) if eval_texts else None,
        "processing_class": tokenizer, "tokenizer": tokenizer,
        "callbacks": _callbacks(m, env, config, client, reporter),
    }
    trainer = m.trl.SFTTrainer(**_supported(m.trl.SFTTrainer, trainer_kwargs))
    resume = _resume_dir(client, output_dir) if env.attempt > 1 else None  # every rank: its own disk
    if resume is not None:
        _say(f"attempt {env.attempt}: resuming from checkpoints/step-{resume.name.split('-')[-1]}")
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        step = trainer.state.global_step
        if eval_texts and not (evaluate and step % config.eval_every == 0):  # the last step's, unless done
            trainer.evaluate()  # logged by the callbacks
        if trainer.is_world_process_zero():
            final = work / "final"
            trainer.save_model(str(final))  # save_pretrained: safetensors by default
            tokenizer.save_pretrained(str(final))
            (final / "training_args.bin").unlink(missing_ok=True)  # a pickle: no place among a model's files
            _upload_dir(client, final, "output", "config.json")
            _say(f"saved output/ after step {trainer.state.global_step}")
    finally:
        if reporter is not None:
            reporter.close()
    return 0


def _work_dir(env: JobEnv) -> Path:
    """The same path on every attempt: Hugging Face logs ``output_dir`` as an MLflow parameter, and a
    parameter that changes between attempts of one run is refused."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in env.job_id)[:80]
    work = Path(tempfile.gettempdir()) / f"llmops-hf-{safe}-r{env.rank}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def main() -> int:
    work: Path | None = None
    try:
        env = read_job_env()
        work = _work_dir(env)
        config = HfConfig.from_hyperparameters(env.hyperparameters, finetune=env.finetune)
        return _train(env, config, work)
    except BadInput as exc:
        print(f"[hf-trainer] bad input: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except ApiError as exc:
        print(f"[hf-trainer] failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except _InjectedFault as fault:
        return fault.code
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
