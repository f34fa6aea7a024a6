"""The serving control module: deploy catalog models as endpoints (vLLM on Kubernetes, or local processes).

An endpoint binds a model to an environment and a route; every deploy is an immutable revision; a canary
takes a share of the traffic the gateway splits; rollback applies an older revision again; the reconciler
follows the runtime and publishes the ``endpoints`` snapshot, so routes appear, move and go by themselves.
REST under ``/llm-ops/v1/serving/`` (``protocol``); see docs/admin-api.md (Serving).

``module`` is bound eagerly, after ``control.serving.module`` is imported: importing that submodule sets the
package attribute ``module`` to it, so a lazily made instance would be shadowed by the submodule whenever
something imported it first (the entry point ``control.serving:module`` would then load a module object).
"""

from control.serving.module import ServingModule
from control.serving.service import EndpointService
from control.serving.services import SERVING
from control.serving.tables import SERVING_TOPIC

module = ServingModule()

__all__ = ["SERVING", "SERVING_TOPIC", "EndpointService", "ServingModule", "module"]
