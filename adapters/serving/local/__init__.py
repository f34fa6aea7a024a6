"""The local serving runtime: endpoints as supervised OpenAI-compatible server processes on this machine."""

from adapters.serving.local.runtime import DEFAULT_DRAIN_S, LocalRuntime

__all__ = ["DEFAULT_DRAIN_S", "LocalRuntime"]
