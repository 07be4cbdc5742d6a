"""CheckScaleOut: when the wait for a scale-out event runs out, decide from the group's scaling activities.

A thin adapter over scalelab.steps.scaleout. It returns the scale-out (seen in
the activities, or in an event that came late) or fails with ScaleOutFailed
(AWS's reasons) or NoScaleOut.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.scaleout import CheckScaleOutEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import TableSettings
from scalelab.steps.scaleout import check_scale_out
from scalelab.store.scaleout import ScaleOutTable

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = ScaleOutTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, CheckScaleOutEvent, "CheckScaleOut event")
    return check_scale_out(request, TABLE).model_dump(mode="json")
