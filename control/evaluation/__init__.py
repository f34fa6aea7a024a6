"""The evaluation control module: runs that pair gateway targets with a catalog dataset, automated metrics
with bootstrap CIs, an LLM judge and human review, comparisons, exports and the promotion gate.

Every call a run makes goes through the gateway's data plane with the module's service key, so evaluations
are routed, policy-checked, metered and priced like any traffic. REST under ``/llm-ops/v1/evaluation/``
(``protocol``); see docs/admin-api.md (Evaluation).
"""

from control.evaluation.module import EvaluationModule
from control.evaluation.runs import RunService
from control.evaluation.services import EVALUATION
from control.evaluation.settings import EvaluationSettings

module = EvaluationModule()

__all__ = ["EVALUATION", "EvaluationModule", "EvaluationSettings", "RunService", "module"]
