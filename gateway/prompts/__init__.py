"""The ``prompts`` built-in gateway plug-in: prompt templates and A/B experiments on the request path."""

from gateway.prompts.plugin import PromptsPlugin, TemplateNotFound

__all__ = ["PromptsPlugin", "TemplateNotFound"]
