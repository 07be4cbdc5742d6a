"""AwaitScaleOut: store the scale-out task token, complete it at once if the launch came first.

A thin adapter over scalelab.scaleout. The state machine runs it as a
``lambda:invoke.waitForTaskToken`` task, so what it returns is only logged;
the task ends when the token is completed (here or by OnScalingEvent).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.models import parse_event
from scalelab.observability import logger, tracer
from scalelab.scaleout import AwaitScaleOutEvent, ScaleOutTable, await_scale_out
from scalelab.settings import TableSettings

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = ScaleOutTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, AwaitScaleOutEvent, "AwaitScaleOut event")
    return await_scale_out(request, TABLE).model_dump(mode="json")
