"""StartStress and StopStress: the SSM command's events and results."""

from __future__ import annotations

from pydantic import Field, model_validator

from scalelab.contracts.base import InputModel, OutputModel, RunId
from scalelab.contracts.load import LoadPlan
from scalelab.contracts.scaling import Scaling

MIN_DURATION_SECONDS = 30
MAX_DURATION_SECONDS = 86_400
COMMAND_ID_PATTERN = r"^[A-Za-z0-9-]{36}$"
LOAD_EXECUTION_ARN_PATTERN = (
    r"^arn:aws[a-z-]*:states:[a-z0-9-]+:[0-9]{12}:execution:[A-Za-z0-9_-]+:[A-Za-z0-9_-]{1,80}$"
)


class StartStressEvent(InputModel):
    """``scaling`` absent means cpu (the SSM burn); a network or request signal needs the load
    balancer's DNS name and the health path, which its load is sent through."""

    run_id: RunId
    auto_scaling_group_name: str = Field(pattern=r"^scalelab-[A-Za-z0-9-]+$", max_length=255)
    duration_seconds: int = Field(ge=MIN_DURATION_SECONDS, le=MAX_DURATION_SECONDS)
    scaling: Scaling | None = None
    load_balancer_dns_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,253}$")
    health_path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=255)

    @model_validator(mode="after")
    def _load_needs_the_load_balancer(self) -> StartStressEvent:
        if self.metric != "cpu" and (self.load_balancer_dns_name is None or self.health_path is None):
            raise ValueError(
                f"a {self.metric} load is sent through the load balancer: "
                "give load_balancer_dns_name and health_path"
            )
        return self

    @property
    def metric(self) -> str:
        return "cpu" if self.scaling is None else self.scaling.metric


class StartStressResult(OutputModel):
    """``command_id`` for cpu's SSM burn, ``load_execution_arn`` and ``load`` for the other
    signals' load; the other is None."""

    command_id: str | None
    instance_ids: list[str]
    duration_seconds: int
    started_at: str
    load_execution_arn: str | None = None
    load: LoadPlan | None = None


class StopStressEvent(InputModel):
    run_id: RunId
    command_id: str | None = Field(default=None, pattern=COMMAND_ID_PATTERN)
    load_execution_arn: str | None = Field(default=None, pattern=LOAD_EXECUTION_ARN_PATTERN)


class StopStressResult(OutputModel):
    """``cancelled``: this call asked SSM to cancel a command, or Step Functions to stop the load,
    still running.

    ``status``: the command's status as SSM reported it (``NotFound`` when SSM does not know it),
    or the load execution's as Step Functions reports it.
    """

    command_id: str | None
    cancelled: bool
    status: str
    load_execution_arn: str | None = None
