"""Provision: create the lab's resources (thin adapter over scalelab.provision)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.aws import name_transient_errors
from scalelab.ledger import RunTable
from scalelab.models import RunConfig, parse_event
from scalelab.observability import logger, tracer
from scalelab.provision import provision_lab
from scalelab.settings import ProvisionSettings, TableSettings

TABLE = RunTable(TableSettings.from_env())
SETTINGS = ProvisionSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = parse_event(event, RunConfig, "Provision event (the run config from Prepare)")
    logger.append_keys(run_id=config.run_id)
    return provision_lab(config, SETTINGS, TABLE).model_dump(mode="json")
