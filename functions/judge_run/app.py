"""Judge: the verdict, its report and its metrics (adapter over steps.verdict)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.judge import JudgeEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, metrics, tracer
from scalelab.core.settings import ReportSettings, TableSettings
from scalelab.steps.verdict import judge_run
from scalelab.store.runs import RunTable

TABLE = RunTable(TableSettings.from_env())
SETTINGS = ReportSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = parse_event(event, JudgeEvent, "Judge event (the workflow's state)")
    return judge_run(run, TABLE, SETTINGS).model_dump(mode="json")
