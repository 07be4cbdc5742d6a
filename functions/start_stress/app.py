"""StartStress: send the CPU burn to the lab's InService instances (thin adapter over scalelab.stress)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.models import parse_event
from scalelab.observability import logger, tracer
from scalelab.stress import StartStressEvent, start_stress


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, StartStressEvent, "StartStress event")
    return start_stress(request).model_dump(mode="json")
