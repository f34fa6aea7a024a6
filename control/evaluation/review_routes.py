"""HTTP surface of human review: a reviewer's tasks and their ratings.

Both need only viewer: the service checks that the caller is the assigned reviewer, or an operator (who may
name another reviewer with ``?reviewer=``).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import (
    Actor,
    Conflict,
    Envelope,
    Forbidden,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    Role,
    SemanticError,
    ok,
    requires,
)
from control.evaluation.protocol import ReviewSubmit, ReviewSummary, ReviewTask
from control.evaluation.review import ReviewService

__all__ = ["CONTROLLERS", "ReviewController"]

RunId = Annotated[str, Parameter(min_length=1, max_length=40, description="the run's id (run_…)")]
_REVIEWER = Parameter(query="reviewer", default=None, min_length=1, max_length=100,
                      description="act as this reviewer (operators; others may name only themselves)")
_RAISES: list[Any] = [Conflict, Forbidden, NotFound, SemanticError]


def _service(ctx: ModuleContext) -> ReviewService:
    return ReviewService(ctx)


class ReviewController(Controller):
    path = "/evaluation/runs/{runId:str}/human-review"
    tags = ["evaluation"]
    dependencies = {"review": Provide(_service, sync_to_thread=False)}

    @get("/tasks", opt=requires(Role.viewer), raises=_RAISES,
         summary="A reviewer's assigned outputs, with the rubric and whether each is rated yet",
         description="The reviewer is the caller (its key id, or its name when the run lists it); an operator "
                     "may name another with ?reviewer=.")
    async def tasks(self, runId: RunId, review: ReviewService, caller: Actor, page: PageParams,
                    reviewer: str | None = _REVIEWER) -> Envelope[Page[ReviewTask]]:
        return ok(await review.tasks(caller, runId, reviewer, page))

    @post("/", status_code=200, opt=requires(Role.viewer), raises=_RAISES,
          summary="Rate one output (a second rating by the same reviewer replaces the first)",
          description="403: the output is not assigned to the caller (operators may rate any); 422: a score "
                      "outside the rubric's scale or an item without output; 409: the run has no human review.")
    async def submit(self, runId: RunId, data: ReviewSubmit, review: ReviewService, caller: Actor,
                     reviewer: str | None = _REVIEWER) -> Envelope[ReviewSummary]:
        return ok(await review.submit(caller, runId, data, reviewer), "Rating recorded")


CONTROLLERS = [ReviewController]
