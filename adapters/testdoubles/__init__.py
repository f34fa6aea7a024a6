"""Test doubles for upstreams the tests cannot run for real (GPU vLLM, OpenAI, Ollama)."""

from adapters.testdoubles.function_upstream import FunctionUpstream, chat_completion, stream_chunks
from adapters.testdoubles.mock_state import Fault, MockConfig, MockState, RecordedRequest, ScriptRule, parse_fault
from adapters.testdoubles.mock_upstream import MockServer, build_app, start_mock_upstream

__all__ = [
    "Fault",
    "FunctionUpstream",
    "MockConfig",
    "MockServer",
    "MockState",
    "RecordedRequest",
    "ScriptRule",
    "build_app",
    "chat_completion",
    "parse_fault",
    "start_mock_upstream",
    "stream_chunks",
]
