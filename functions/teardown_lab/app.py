"""Teardown: one deletion pass over the run's ledger (adapter over steps.teardown)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.teardown import RunRef
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import TableSettings
from scalelab.steps.teardown import teardown_lab
from scalelab.store.runs import RunTable

TABLE = RunTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = parse_event(event, RunRef, "Teardown event")
    return teardown_lab(run.run_id, TABLE).model_dump(mode="json")
