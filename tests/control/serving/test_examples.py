"""docs/serving-examples.md and examples/serving_cli.py, run against a live `llmops serve` on the embedded default.

Every `sh` block of the page runs, in order, as one bash script, then every `python` block as one Python
script, with the page's placeholders replaced (its stated rule); the CLI example runs as a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtests.serving_bench import LiveServer, live_server, register_local_model, write_gguf

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "serving-examples.md"
CLI = ROOT / "examples" / "serving_cli.py"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.timeout(300)


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("serving-examples")
    (workdir / "examples").symlink_to(ROOT / "examples")  # the page runs `python examples/serving_cli.py`
    with live_server(workdir) as server:
        yield server
    assert "Traceback" not in server.log.read_text(errors="replace"), server.log.read_text()[-3000:]


def _substituted(code: str, live: LiveServer) -> str:
    return (code.replace("http://127.0.0.1:4000", live.url).replace("change-me", live.key)
            .replace("https://api.openai.com/v1", live.mock_url))


def _env(live: LiveServer, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this venv's
    env.pop("LLMOPS_KEY", None)
    return env


def test_the_page_has_the_blocks_it_promises() -> None:
    text = DOC.read_text()
    assert len(blocks(text, "sh")) >= 8 and len(blocks(text, "python")) >= 3
    assert {lang for lang, _ in _BLOCK.findall(text)} <= {"sh", "python", "console"}, "a block no test runs"


def test_the_curl_then_python_examples_run(live: LiveServer) -> None:
    text = DOC.read_text()
    write_gguf(live.workdir / "smollm2-135m.gguf")
    model_file = live.workdir / "model-id"
    script = "set -euo pipefail\n" + "\n".join(_substituted(b, live) for b in blocks(text, "sh")) \
        + f'\nprintf %s "$MODEL" > {model_file}\n'
    shell = subprocess.run(["bash", "-c", script], cwd=live.workdir, env=_env(live), capture_output=True,
                           text=True, timeout=240)
    assert shell.returncode == 0, f"stdout:\n{shell.stdout[-4000:]}\nstderr:\n{shell.stderr[-4000:]}"
    out = shell.stdout
    # what the page says each step shows, from the real server
    assert '"complete":true' in out and "approved" in out
    assert '"status":"ready"' in out and "mock" in out.lower()
    assert re.search(r"x-llmops-provider: serving:\S+:stable", out, re.I)
    assert re.search(r"^\s*\d+ serving:\S+:canary$", out, re.M), "the canary took no share of the 40 requests"
    assert re.search(r"^\s*\d+ serving:\S+:stable$", out, re.M)
    assert re.search(r"^2 rolled_back ", out, re.M) and re.search(r"^1 active ", out, re.M)
    assert '"runtime":"external","status":"ready","route":"mini"' in out and "\nSTG\n" in out
    assert '"deleted":true' in out and "gone, as it should be" in out

    python = subprocess.run([sys.executable, "-c", _substituted("\n".join(blocks(text, "python")), live)],
                            cwd=live.workdir, env=_env(live, KEY=live.key, MODEL=model_file.read_text()),
                            capture_output=True, text=True, timeout=240)
    assert python.returncode == 0, f"stdout:\n{python.stdout[-4000:]}\nstderr:\n{python.stderr[-4000:]}"
    assert "ready 1" in python.stdout and "serving:" in python.stdout and "409" in python.stdout
    assert "CompletionUsage(" in python.stdout
    assert live.key not in shell.stdout + shell.stderr + python.stdout + python.stderr


def _cli(live: LiveServer, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = _env(live, LLMOPS_URL=live.url)
    if key is not None:
        env["LLMOPS_KEY"] = key
    return subprocess.run([sys.executable, str(CLI), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_main(live: LiveServer, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """The example's main() in this process (each subprocess pays ~2 s of imports): (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("serving_cli", CLI)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("LLMOPS_URL", live.url)

    def run(*args: str, key: str | None = live.key) -> tuple[int, str, str]:
        if key is None:
            monkeypatch.delenv("LLMOPS_KEY", raising=False)
        else:
            monkeypatch.setenv("LLMOPS_KEY", key)
        code = module.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_the_cli_example(live: LiveServer, cli_main: Callable[..., tuple[int, str, str]]) -> None:
    with live.admin() as admin:
        model_id = register_local_model(admin, "cli-model", write_gguf(live.workdir / "cli.gguf"))
    # as a user runs it: a subprocess
    deployed = _cli(live, "deploy", "cli-ep", model_id, "--cpu", "--wait", key=live.key)
    assert deployed.returncode == 0, deployed.stderr
    endpoint = json.loads(deployed.stdout)
    assert endpoint["status"] == "ready" and endpoint["route"] == "cli-ep" and endpoint["useGpu"] is False

    code, out, _ = cli_main("list", "--model-id", model_id)
    assert code == 0 and [e["id"] for e in json.loads(out)] == [endpoint["id"]]
    code, out, _ = cli_main("get", endpoint["id"])
    assert code == 0 and json.loads(out)["currentRevision"] == 1
    code, out, err = cli_main("chat", "cli-ep", "Hello!", "--max-tokens", "3")
    assert code == 0, err
    assert json.loads(out)["provider"] == f"serving:{endpoint['id']}:stable"
    code, out, err = cli_main("redeploy", endpoint["id"], "--canary", "20", "--wait")
    assert code == 0, err
    assert json.loads(out)["trafficSplit"] == {"1": 80, "2": 20}
    code, out, _ = cli_main("rollback", endpoint["id"], "--reason", "cli test")
    assert code == 0 and json.loads(out)["canaryRevision"] is None
    code, out, _ = cli_main("delete", endpoint["id"])
    assert code == 0 and json.loads(out)["deleted"] is True

    # refusals: status and message on stderr, exit 1; a missing key exits 2; the key is never printed
    gone = _cli(live, "get", endpoint["id"], key=live.key)
    assert gone.returncode == 1 and gone.stderr.startswith("error: 404: ") and gone.stdout == ""
    code, _, err = cli_main("list", key="llmops_0123456789abcdef_wrong")
    assert code == 1 and "error: 401" in err and "wrong" not in err
    code, _, bad = cli_main("deploy", "Bad_Name", model_id)
    assert code == 1 and "error: 400" in bad and "name" in bad
    assert cli_main("list", key=None)[0] == 2
    code, _, missing_route = cli_main("chat", "no-such-route", "Hi")
    assert code == 1 and "error: 404" in missing_route
    assert live.key not in gone.stderr + bad + missing_route
