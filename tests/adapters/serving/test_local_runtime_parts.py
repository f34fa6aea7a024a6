"""LocalRuntime's parts without a running server: command plans, redaction, log bounds, model fetch, faults."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.objectstore import LocalObjectStore
from adapters.serving.base import RuntimeFailure
from adapters.serving.local import LocalRuntime, commands
from adapters.serving.local.commands import child_env, plan_server, redact_argv, redact_text
from adapters.serving.local.logs import ProcessLogs
from adapters.serving.local.process import ProcessOptions, ServerProcess
from adapters.serving.settings import load_serving_settings
from adapters.testdoubles.serving_mock import ServingFaults, parse_faults
from tests.adapters.serving.local_helpers import eventually, local_runtime, make_spec, read_log, wait_status

AUTO = load_serving_settings({"SERVING_LOCAL_SERVER": "auto"})
GGUF = {"model_format": "gguf", "model_files": ["models/mdl_1/1/tiny.gguf"]}


def test_default_is_the_mock_with_the_endpoints_vllm_args(tmp_path: Path) -> None:
    plan = plan_server(make_spec(1, vllm_args=["--max-model-len", "512"]), load_serving_settings({}),
                       workdir=tmp_path, has_objectstore=True)
    assert plan.kind == "mock"
    assert plan.argv[1:3] == ["-m", "adapters.testdoubles.serving_mock"]
    assert plan.argv[3:5] == ["--max-model-len", "512"] and plan.argv[-2:] == ["--model-name", "tiny-r1"]
    assert plan.command(8123)[plan.argv.index("{port}")] == "8123"


async def test_endpoint_args_cannot_move_the_server_off_loopback(tmp_path: Path) -> None:
    spec = make_spec(1, vllm_args=["--host", "0.0.0.0", "--port", "1", "--model-name", "other"])
    async with local_runtime(tmp_path) as runtime:
        await runtime.apply(spec, "stable")
        st = await wait_status(runtime, spec)
        assert st.base_url is not None and st.base_url.startswith("http://127.0.0.1:") and ":1/" not in st.base_url
        with open("/proc/net/tcp") as f:  # noqa: ASYNC230 - a few KB of procfs
            listening = [line.split()[1] for line in f.readlines()[1:] if line.split()[3] == "0A"]
        port = f"{st.details['port']:04X}"
        assert f"0100007F:{port}" in listening and f"00000000:{port}" not in listening
        with pytest.raises(RuntimeFailure):
            await runtime.apply(make_spec(2, name="../../etc"), "stable")


def test_auto_runs_a_gguf_model_with_llama_cpp_only_when_everything_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "_llama_installed", lambda: True)
    plan = plan_server(make_spec(1, **GGUF), AUTO, workdir=tmp_path, has_objectstore=True)
    assert plan.kind == "llama_cpp" and plan.model_key == "models/mdl_1/1/tiny.gguf"
    assert plan.model_path == tmp_path / "models" / "models/mdl_1/1/tiny.gguf"
    assert plan.argv[1:3] == ["-m", "adapters.serving.local.llama_server"]
    assert ["--model", str(plan.model_path), "--model-alias", "tiny-r1"] == plan.argv[3:7]
    # Any one condition missing: the mock.
    assert plan_server(make_spec(1, **GGUF), load_serving_settings({}), workdir=tmp_path,
                       has_objectstore=True).kind == "mock"
    assert plan_server(make_spec(1, **GGUF), AUTO, workdir=tmp_path, has_objectstore=False).kind == "mock"
    assert plan_server(make_spec(1, model_format="safetensors", model_files=["m/x.safetensors"]), AUTO,
                       workdir=tmp_path, has_objectstore=True).kind == "mock"
    monkeypatch.setattr(commands, "_llama_installed", lambda: False)
    assert plan_server(make_spec(1, **GGUF), AUTO, workdir=tmp_path, has_objectstore=True).kind == "mock"


def test_a_hostile_model_key_does_not_escape_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "_llama_installed", lambda: True)
    plan = plan_server(make_spec(1, model_format="gguf", model_files=["../../etc/x.gguf"]), AUTO,
                       workdir=tmp_path, has_objectstore=True)
    assert plan.kind == "none" and plan.failure is not None and plan.argv == []


def test_redaction() -> None:
    argv = ["python", "--api-key", "sk-abcdefgh12345678", "--hf-token=hf_xyz", "--max-model-len", "512"]
    assert redact_argv(argv) == ["python", "--api-key", "***", "--hf-token=***", "--max-model-len", "512"]
    text = ("failed: --api-key sk-abcdefgh12345678 Authorization: Bearer abc.def "
            "url postgresql://u:hunter2@db/x api_key=\"zzz\" token 0123456789abcdef0123456789abcdef0123456789")
    out = redact_text(text)
    for secret in ("sk-abcdefgh12345678", "abc.def", "hunter2", "zzz", "0123456789abcdef0123456789abcdef0123456789"):
        assert secret not in out
    assert out.startswith("failed: --api-key ***") and "postgresql://u:***@db/x" in out


def test_children_get_no_secrets_from_the_environment() -> None:
    env = child_env({"PATH": "/usr/bin", "OPENAI_API_KEY": "sk-x", "LLMOPS_ADMIN_KEY": "k", "DATABASE_URL": "pg://"})
    assert env["PATH"] == "/usr/bin" and "OPENAI_API_KEY" not in env and "LLMOPS_ADMIN_KEY" not in env
    assert "DATABASE_URL" not in env and env["PYTHONPATH"].split(":")[0] == str(Path(commands.__file__).parents[3])


def test_logs_stay_bounded_while_the_writer_keeps_appending(tmp_path: Path) -> None:
    logs = ProcessLogs.under(tmp_path, "p", max_bytes=1000)
    out, err = logs.open()
    with out, err:
        out.write(b"a" * 1500)
        out.flush()
        logs.trim()
        assert logs.stdout.stat().st_size == 0 and (tmp_path / "p.stdout.log.1").stat().st_size == 1500
        out.write(b"next\n")  # O_APPEND: lands at the new end, no hole of 1,500 NULs before it
        out.flush()
    assert logs.stdout.read_bytes() == b"next\n"


def test_stderr_tail_is_the_last_lines_redacted(tmp_path: Path) -> None:
    logs = ProcessLogs.under(tmp_path, "p")
    logs.stderr.write_text("".join(f"line {i}\n" for i in range(20)) + "boom --api-key sk-secretsecret\n")
    tail = logs.stderr_tail(lines=3)
    assert tail.splitlines() == ["line 18", "line 19", "boom --api-key ***"]


async def _run_to_the_end(tmp_path: Path, command: str) -> ServerProcess:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        proc = ServerProcess(revision=1, argv=[command, "--port", "{port}"], port=1, env=child_env(),
                             cwd=str(tmp_path), logs=ProcessLogs.under(tmp_path, "x"),
                             options=ProcessOptions(ready_timeout_s=10, backoff_s=0.01), session=lambda: session)
        proc.start()
        assert proc._task is not None
        await proc._task
    return proc


async def test_a_command_that_cannot_be_executed_is_image_not_runnable(tmp_path: Path) -> None:
    proc = await _run_to_the_end(tmp_path, str(tmp_path / "no-such-server"))
    assert (proc.state, proc.reason) == ("failed", "ImageNotRunnable")
    assert "no-such-server" in proc.message and str(tmp_path) not in proc.message
    junk = tmp_path / "junk-server"
    junk.write_bytes(b"\x00\x01 not a program")
    junk.chmod(0o755)
    proc = await _run_to_the_end(tmp_path, str(junk))  # found, but exec fails in the launcher: exit 127
    assert (proc.state, proc.reason, proc.restarts) == ("failed", "ImageNotRunnable", 0)
    assert "exited with code 127" in proc.message and "Exec format error" in proc.message


async def test_a_port_taken_before_the_first_start_is_traded_for_another(tmp_path: Path) -> None:
    import aiohttp

    from adapters.serving.local.commands import PORT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "adapters.testdoubles.serving_mock", "--port", PORT, "--model-name", "m"]
        async with aiohttp.ClientSession() as session:
            proc = ServerProcess(revision=1, argv=argv, port=port, env=child_env(), cwd=str(tmp_path),
                                 logs=ProcessLogs.under(tmp_path, "p"), session=lambda: session,
                                 options=ProcessOptions(ready_timeout_s=30, backoff_s=0.01))
            proc.start()
            try:
                await eventually(lambda: proc.state == "ready" or proc.state == "failed", timeout_s=30)
                assert proc.state == "ready" and proc.restarts == 1 and proc.port != port
                assert "address already in use" in read_log(proc.logs.stderr).lower()
            finally:
                await proc.stop()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_model_files_come_from_the_object_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    await store.put_stream("models/mdl_1/1/tiny.gguf", _chunks(b"GGUF-bytes"))
    runtime = LocalRuntime(AUTO, workdir=tmp_path / "serving", objectstore=store)
    path = tmp_path / "serving" / "models" / "tiny.gguf"
    await runtime._fetch_model("models/mdl_1/1/tiny.gguf", path)
    assert path.read_bytes() == b"GGUF-bytes" and not path.with_name("tiny.gguf.part").exists()


async def test_a_missing_model_file_fails_the_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "_llama_installed", lambda: True)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    spec = make_spec(1, **GGUF)
    async with local_runtime(tmp_path, AUTO, objectstore=store) as runtime:
        assert runtime.render(spec, "stable")[0]["server"] == "llama_cpp"
        await runtime.apply(spec, "stable")
        st = await wait_status(runtime, spec, phase="failed", timeout_s=5)
    assert st.reason == "ModelNotFound" and "models/mdl_1/1/tiny.gguf" in st.message


def test_mock_faults_parse_and_unknown_ones_are_refused() -> None:
    assert parse_faults(["crash-after:2", "ignore-sigterm"]) == ServingFaults(crash_after_s=2.0, ignore_sigterm=True)
    assert parse_faults([]) == ServingFaults()
    for bad in (["explode"], ["crash-after:soon"], ["slow-start:-1"], ["crash:1"]):
        with pytest.raises(ValueError):
            parse_faults(bad)
    done = subprocess.run([sys.executable, "-m", "adapters.testdoubles.serving_mock", "--mock-fault", "explode"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown --mock-fault 'explode'" in done.stderr
