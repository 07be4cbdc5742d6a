"""LoadWorker: one share of the load for one round, measured and recorded (adapter over steps.load)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.load import WorkerEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import TableSettings
from scalelab.steps.load import run_worker
from scalelab.store.load import LoadTable

TABLE = LoadTable(TableSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, WorkerEvent, "LoadWorker event")
    return run_worker(request, TABLE).model_dump(mode="json")
