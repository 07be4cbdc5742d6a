"""StopStress: cancel the stress command, or stop the load, if it still runs (adapter over steps.stress)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.stress import StopStressEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.steps.stress import stop_stress


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, StopStressEvent, "StopStress event")
    return stop_stress(request).model_dump(mode="json")
