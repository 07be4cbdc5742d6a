"""Provision: create the lab's resources (adapter over steps.provision)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from scalelab.contracts.base import parse_event
from scalelab.contracts.run import RunConfig
from scalelab.core.aws import name_transient_errors
from scalelab.core.observability import logger, tracer
from scalelab.core.settings import ProvisionSettings, TableSettings
from scalelab.steps.provision import provision_lab
from scalelab.store.runs import RunTable

TABLE = RunTable(TableSettings.from_env())
SETTINGS = ProvisionSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@name_transient_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = parse_event(event, RunConfig, "Provision event (the run config from Prepare)")
    logger.append_keys(run_id=config.run_id)
    return provision_lab(config, SETTINGS, TABLE).model_dump(mode="json")
