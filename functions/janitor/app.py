"""Janitor: note how an execution ended, or sweep what ended runs left (adapter over steps.janitor)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.janitor import CloseEvent, JanitorEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import JanitorSettings, TableSettings
from scalelab.steps.janitor import close_run, sweep
from scalelab.store.runs import RunTable

TABLE = RunTable(TableSettings.from_env())
SETTINGS = JanitorSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, JanitorEvent, "Janitor event").root
    if isinstance(request, CloseEvent):
        return close_run(request.execution_name, request.status, TABLE, SETTINGS).model_dump(mode="json")
    return sweep(TABLE, SETTINGS).model_dump(mode="json")
