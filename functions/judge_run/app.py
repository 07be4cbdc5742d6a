"""Judge: the verdict, its report and its metrics (thin adapter over scalelab.verdict)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.ledger import RunTable
from scalelab.models import parse_event
from scalelab.observability import logger, metrics, tracer
from scalelab.settings import TableSettings
from scalelab.verdict import JudgeEvent, ReportSettings, judge_run

TABLE = RunTable(TableSettings.from_env())
SETTINGS = ReportSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = parse_event(event, JudgeEvent, "Judge event (the workflow's state)")
    return judge_run(run, TABLE, SETTINGS).model_dump(mode="json")
