"""Prepare: validate the execution input and take the lab's lock (thin adapter over scalelab.prepare)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.ledger import RunTable
from scalelab.models import PrepareEvent, parse_event
from scalelab.observability import logger, tracer
from scalelab.prepare import prepare_run
from scalelab.settings import TableSettings, run_defaults

# Validated at cold start: a misconfigured function fails at init, not mid-run.
TABLE = RunTable(TableSettings.from_env())
run_defaults()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, PrepareEvent, "Prepare event")
    return prepare_run(request, TABLE).model_dump(mode="json")
