"""OnScalingEvent: log an Auto Scaling event in its run and end the run's scale-out wait.

A thin adapter over scalelab.steps.scaleout, invoked by the EventBridge rule on
``aws.autoscaling`` launch and terminate events of ``scalelab-*`` groups.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import TableSettings
from scalelab.steps.scaleout import on_scaling_event
from scalelab.store.scaleout import ScaleOutTable

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = ScaleOutTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    envelope = parse_event(event, EventBridgeModel, "EventBridge event")
    return on_scaling_event(envelope, TABLE).model_dump(mode="json")
