"""The built-in policy plug-ins (entry points in pyproject, group ``llmops.gateway``):
``auth``, ``guardrails`` and ``limits``, each its own module, enabled by default
through ``gateway.plugins.BUILTIN_PLUGINS``. They enforce what the governance module
publishes (``ctx.control``); their pure decisions live in ``policies/``."""

__all__: list[str] = []
