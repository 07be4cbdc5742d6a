"""StartStress: send the CPU burn to the lab's InService instances, or start the load state machine
for a network or request signal (adapter over steps.stress)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.stress import StartStressEvent, StartStressResult
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import LoadSettings, TableSettings
from scalelab.steps.stress import start_stress
from scalelab.store.idempotency import run_table_persistence
from scalelab.store.runs import RunTable

TABLE_SETTINGS = TableSettings.from_env()
PERSISTENCE = run_table_persistence(TABLE_SETTINGS)
LOAD = LoadSettings.from_env()
RUNS = RunTable(TABLE_SETTINGS)
# A retried invocation (a Lambda timeout, a lost response, the state machine's
# Retry) returns the first command or load instead of starting a second.
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="[run_id, auto_scaling_group_name]", expires_after_seconds=6 * 3600
)


@idempotent_function(  # type: ignore[untyped-decorator]  # Powertools' decorator is untyped
    data_keyword_argument="request",
    persistence_store=PERSISTENCE,
    config=IDEMPOTENCY,
    output_serializer=PydanticSerializer(model=StartStressResult),
)
def start_once(request: StartStressEvent) -> StartStressResult:
    return start_stress(request, LOAD, RUNS)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    IDEMPOTENCY.register_lambda_context(context)
    request = parse_event(event, StartStressEvent, "StartStress event")
    result: StartStressResult = start_once(request=request)
    return result.model_dump(mode="json")
