"""AwaitScaleOut: store the scale-out task token, complete it at once if the launch came first.

A thin adapter over scalelab.steps.scaleout. The state machine runs it as a
``lambda:invoke.waitForTaskToken`` task, so what it returns is only logged;
the task ends when the token is completed (here or by OnScalingEvent).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.scaleout import AwaitScaleOutEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import TableSettings
from scalelab.steps.scaleout import await_scale_out
from scalelab.store.scaleout import ScaleOutTable

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = ScaleOutTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, AwaitScaleOutEvent, "AwaitScaleOut event")
    return await_scale_out(request, TABLE).model_dump(mode="json")
