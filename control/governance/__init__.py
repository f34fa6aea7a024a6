"""Governance: versioned policies (allowed models, limits, budgets, guardrails) behind /governance/policies,
and the teams and keys they apply to behind /governance/teams and /governance/keys.

The audit log it relies on is core admin plumbing (``adapters.adminapi.audit``),
served at ``GET /llm-ops/v1/audit/logs`` whichever modules are enabled.
"""

from control.governance.documents import PolicyDocument, validate_document
from control.governance.module import GovernanceModule
from control.governance.protocol import Policy, PolicyCreate, PolicyUpdate, PolicyVersion
from control.governance.service import PolicyService
from control.governance.tables import POLICIES_TOPIC

module = GovernanceModule()

__all__ = [
    "POLICIES_TOPIC",
    "GovernanceModule",
    "Policy",
    "PolicyCreate",
    "PolicyDocument",
    "PolicyService",
    "PolicyUpdate",
    "PolicyVersion",
    "module",
    "validate_document",
]
