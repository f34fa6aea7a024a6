"""Serving policies (pure): judging a canary revision against the stable one on what the gateway measured."""

from policies.serving.canary import CanaryBounds, CanaryVerdict, SlotStats, judge, p95

__all__ = ["CanaryBounds", "CanaryVerdict", "SlotStats", "judge", "p95"]
