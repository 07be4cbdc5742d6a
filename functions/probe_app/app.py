"""Probe: HTTP requests through the load balancer, judged for spread (adapter over steps.probe)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.probe import ProbeEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import ProbeSettings
from scalelab.steps.probe import probe_app

SETTINGS = ProbeSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, ProbeEvent, "Probe event")
    return probe_app(request, SETTINGS).model_dump(mode="json")
