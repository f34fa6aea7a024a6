"""The model status lifecycle: which transitions exist and what each one requires.

    draft ──► under_review ──► approved ──► deprecated ──► retired
      ▲            │                 ▲            │
      └────────────┘                 └────────────┘
     (sent back / withdrawn)          (reinstated)

* ``draft → under_review`` needs the model's files complete (base and fine-tuned).
* ``under_review → approved`` needs an approval: the latest decision recorded in the
  current review round, for the current version, must be ``approve``.
  Each entry into ``under_review`` starts a new round, so decisions from an earlier
  round (perhaps on different files) never count.
* The definition (PUT) may change only in ``draft`` and ``under_review`` (an edit
  during review creates a version no approval has seen yet); files only in ``draft``.
* ``retired`` is final.
"""

from __future__ import annotations

from adapters.adminapi import Conflict

__all__ = ["EDITABLE", "TRANSITIONS", "UPLOADABLE", "check_transition"]

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("under_review",),
    "under_review": ("draft", "approved"),
    "approved": ("deprecated",),
    "deprecated": ("approved", "retired"),
    "retired": (),
}
EDITABLE = frozenset({"draft", "under_review"})
UPLOADABLE = frozenset({"draft"})


def check_transition(model_id: str, current: str, target: str) -> None:
    """Raise ``Conflict`` (409) naming the allowed targets when ``current → target`` is not a transition."""
    allowed = TRANSITIONS[current]
    if target not in allowed:
        options = ", ".join(allowed) if allowed else "none (retired is final)"
        raise Conflict(
            f"Model {model_id!r} cannot go from {current} to {target}; allowed: {options}",
            {"from": current, "to": target, "allowed": list(allowed)},
        )
