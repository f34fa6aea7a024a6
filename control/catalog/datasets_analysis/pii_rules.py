"""The PII rules now live in ``policies.pii`` (shared with the gateway's guardrails); re-exported here."""

from policies.pii import BUILTIN_RULES, PiiRule, default_rules, iban_ok, luhn_ok, mask

__all__ = ["BUILTIN_RULES", "PiiRule", "default_rules", "iban_ok", "luhn_ok", "mask"]
