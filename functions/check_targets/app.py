"""Check targets: a target-health snapshot of the run's target group (adapter over scalelab.steps.targets)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.targets import CheckTargetsEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.steps.targets import check_targets


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, CheckTargetsEvent, "CheckTargets event")
    return check_targets(request).model_dump(mode="json")
