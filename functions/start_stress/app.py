"""StartStress: send the CPU burn to the lab's InService instances (thin adapter over scalelab.stress)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.idempotency import run_table_persistence
from scalelab.models import parse_event
from scalelab.observability import logger, tracer
from scalelab.settings import TableSettings
from scalelab.stress import StartStressEvent, StartStressResult, start_stress

PERSISTENCE = run_table_persistence(TableSettings.from_env())
# A retried invocation (a Lambda timeout, a lost response, the state machine's
# Retry) returns the first command instead of sending a second burn.
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
    return start_stress(request)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    IDEMPOTENCY.register_lambda_context(context)
    request = parse_event(event, StartStressEvent, "StartStress event")
    result: StartStressResult = start_once(request=request)
    return result.model_dump(mode="json")
