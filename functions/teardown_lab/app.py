"""Teardown: one deletion pass over the run's ledger (thin adapter over scalelab.teardown)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.ledger import RunTable
from scalelab.models import RunRef, parse_event
from scalelab.observability import logger, tracer
from scalelab.settings import TableSettings
from scalelab.teardown import teardown_lab

TABLE = RunTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = parse_event(event, RunRef, "Teardown event")
    return teardown_lab(run.run_id, TABLE).model_dump(mode="json")
