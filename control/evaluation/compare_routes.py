"""HTTP surface of run comparison: ``GET /evaluation/runs/compare?runIds=a,b[,…]`` (viewer)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import Parameter

from adapters.adminapi import Conflict, Envelope, ModuleContext, NotFound, SemanticError, ok
from control.evaluation.compare import MAX_ARMS, RUN_IDS_PATTERN, compare_runs
from control.evaluation.protocol import Comparison

__all__ = ["CONTROLLERS", "CompareController"]

_RAISES: list[Any] = [Conflict, NotFound, SemanticError]


class CompareController(Controller):
    path = "/evaluation/runs/compare"
    tags = ["evaluation"]

    @get("/", raises=_RAISES, summary="Compare runs metric by metric, paired on shared dataset rows",
         description="The first run is the baseline, the second the candidate (``run:1`` names a run's second "
                     "target). Paired differences (candidate minus baseline) with paired-bootstrap 95% CIs, and "
                     "a promotion recommendation with its reasons. 409: different dataset versions, or a run "
                     "that has not succeeded; 422: a run named twice.")
    async def compare(self, ctx: ModuleContext, run_ids: str = Parameter(
            query="runIds", pattern=RUN_IDS_PATTERN, max_length=MAX_ARMS * 43,
            description=f"two to {MAX_ARMS} run ids, comma-separated, each optionally with ':1' for its "
                        "second target")) -> Envelope[Comparison]:
        return ok(await compare_runs(ctx.store, run_ids))


CONTROLLERS = [CompareController]
