"""Provider adapters behind the `Upstream` protocol."""

from adapters.upstream.balancer import Balancer, RandomBalancer, pick_backend
from adapters.upstream.base import ENDPOINTS, Backend, Completion, Timeouts, Upstream, UpstreamCall, Usage
from adapters.upstream.breaker import BreakerState, CircuitBreaker
from adapters.upstream.ollama import OllamaUpstream
from adapters.upstream.openai_compat import OpenAIUpstream
from adapters.upstream.urls import redact_url

__all__ = [
    "ENDPOINTS",
    "Backend",
    "Balancer",
    "BreakerState",
    "CircuitBreaker",
    "Completion",
    "OllamaUpstream",
    "OpenAIUpstream",
    "RandomBalancer",
    "Timeouts",
    "Upstream",
    "UpstreamCall",
    "Usage",
    "pick_backend",
    "redact_url",
]
