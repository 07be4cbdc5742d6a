"""PublishReport: the HTML report after Teardown, and the notification linking it
(adapter over steps.report_html)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.judge import PublishEvent
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import ReportSettings, TableSettings
from scalelab.steps.report_html import publish_report
from scalelab.store.runs import RunTable

TABLE = RunTable(TableSettings.from_env())
SETTINGS = ReportSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    published = parse_event(event, PublishEvent, "PublishReport event (Judge's verdict)")
    return publish_report(published.verdict, TABLE, SETTINGS).model_dump(mode="json")
