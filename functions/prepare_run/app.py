"""Prepare: validate the execution input and take the lab's lock (adapter over steps.prepare)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.run import PrepareEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import RunDefaults, TableSettings
from scalelab.steps.prepare import prepare_run
from scalelab.store.runs import RunTable

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = RunTable(TableSettings.from_env())
DEFAULTS = RunDefaults.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, PrepareEvent, "Prepare event")
    return prepare_run(request, TABLE, DEFAULTS).model_dump(mode="json")
