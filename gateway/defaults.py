"""The embedded default: what `llmops serve` runs with no config file at all.

Route `demo` is answered by the built-in mock upstream (a test double started
in-process); when OPENAI_API_KEY is set, route `openai` and direct
`openai/<model>` names reach OpenAI too.

The `auth` plug-in lists `demo` as a public route: once a data-plane key exists,
every other route wants a key, and the demo keeps answering without one.
"""

from __future__ import annotations

import os

from gateway.config import BUILTIN_MOCK, GatewayCfg, decode_config

__all__ = ["default_config"]


def default_config(env: dict[str, str] | None = None) -> GatewayCfg:
    env = dict(os.environ) if env is None else env
    providers: list[dict[str, object]] = [{"name": "mock", "kind": "openai", "base_url": BUILTIN_MOCK}]
    routes: list[dict[str, object]] = [{"name": "demo", "targets": [{"provider": "mock", "model": "mock-model"}]}]
    if env.get("OPENAI_API_KEY"):
        providers.append({
            "name": "openai", "kind": "openai",
            "base_url": env.get("OPENAI_BASE_URL", "https://api.openai.com/v1"), "api_key": "${OPENAI_API_KEY}",
        })
        routes.append({"name": "openai", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]})
    plugins = [{"name": "auth", "settings": {"public_routes": ["demo"]}}]
    return decode_config({"providers": providers, "routes": routes, "plugins": plugins}, env)
