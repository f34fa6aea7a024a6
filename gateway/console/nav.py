"""The console's sections, in menu order: one place, so the menu, the page crawl test and the docs agree."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NAV", "NavItem"]


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    section: str  # pages under `href` mark this item as current


NAV: tuple[NavItem, ...] = (
    NavItem("Chat", "/console/chat", "chat"),
    NavItem("Serving", "/console/serving", "serving"),
    NavItem("Models", "/console/catalog/models", "models"),
    NavItem("Datasets", "/console/catalog/datasets", "datasets"),
    NavItem("Training", "/console/training", "training"),
    NavItem("Evaluation", "/console/evaluation", "evaluation"),
    NavItem("Prompts", "/console/prompts", "prompts"),
    NavItem("Experiments", "/console/experiments", "experiments"),
    NavItem("Usage & cost", "/console/usage", "usage"),
    NavItem("Governance", "/console/governance", "governance"),
)
