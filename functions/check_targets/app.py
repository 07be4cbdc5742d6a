"""Check targets: a target-health snapshot of the run's target group (adapter over scalelab.targets)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.models import parse_event
from scalelab.observability import logger, tracer
from scalelab.targets import CheckTargetsEvent, check_targets


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, CheckTargetsEvent, "CheckTargets event")
    return check_targets(request).model_dump(mode="json")
