"""Rate-limit and budget backends: one protocol (``base.RateLimiter``), an in-process backend for
one replica (``MemoryRateLimiter``) and Redis for several (``RedisRateLimiter``: one Lua script
reserves every check of a request atomically, another settles, on Redis's clock).

What is checked and reserved is decided in ``policies.limits``; these only keep the counters."""

from adapters.ratelimit.base import BackendUnavailable, RateLimiter
from adapters.ratelimit.memory import MemoryRateLimiter
from adapters.ratelimit.redis import RedisRateLimiter

__all__ = ["BackendUnavailable", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]
