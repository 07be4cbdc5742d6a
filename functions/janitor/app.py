"""Janitor: note how an execution ended, or sweep what ended runs left (adapter over scalelab.janitor)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.janitor import JanitorEvent, close_run, sweep
from scalelab.ledger import RunTable
from scalelab.models import parse_event
from scalelab.observability import logger, tracer
from scalelab.settings import JanitorSettings, TableSettings

TABLE = RunTable(TableSettings.from_env())
SETTINGS: JanitorSettings = JanitorSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, JanitorEvent, "Janitor event")
    if request.action == "close" and request.execution_name and request.status:
        return close_run(request.execution_name, request.status, TABLE, SETTINGS).model_dump(mode="json")
    return sweep(TABLE, SETTINGS).model_dump(mode="json")
