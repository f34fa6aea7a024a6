"""The prompts control module: versioned templates, A/B experiments, their results and supervision.

Templates and experiments come from the admin REST (``/llm-ops/v1/prompts/…``) or from the gateway YAML's
``prompts:`` section (GitOps, synced at start-up and on every reload: ``sync``); either way they reach the
gateway as the ``templates`` and ``experiments`` snapshots, published in the write's own transaction.
"""

from control.prompts.module import PromptsModule
from control.prompts.protocol import Experiment, ExperimentEvent, Template, TemplateVersion
from control.prompts.service import PromptsService
from control.prompts.services import PROMPTS
from control.prompts.settings import PromptsSettings

module = PromptsModule()

__all__ = [
    "PROMPTS",
    "Experiment",
    "ExperimentEvent",
    "PromptsModule",
    "PromptsService",
    "PromptsSettings",
    "Template",
    "TemplateVersion",
    "module",
]
