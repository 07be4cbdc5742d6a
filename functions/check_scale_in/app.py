"""CheckScaleIn: once the load stopped, has the group come back to its capacity from before the scale-out?

A thin adapter over scalelab.steps.scaleout. The state machine calls it every
``timing.poll_seconds`` while ``expectations.scale_in_within_seconds`` runs: it
returns the scale-in (seen in a terminate event, or at the deadline in the
group's scaling activities), or not yet, or fails with NoScaleIn.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.scaleout import CheckScaleInEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import TableSettings
from scalelab.steps.scaleout import check_scale_in
from scalelab.store.scaleout import ScaleOutTable

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = ScaleOutTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, CheckScaleInEvent, "CheckScaleIn event")
    return check_scale_in(request, TABLE).model_dump(mode="json")
