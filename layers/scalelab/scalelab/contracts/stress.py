"""StartStress and StopStress: the SSM command's events and results."""

from __future__ import annotations

from pydantic import Field

from scalelab.contracts.base import InputModel, OutputModel, RunId

MIN_DURATION_SECONDS = 30
MAX_DURATION_SECONDS = 86_400
COMMAND_ID_PATTERN = r"^[A-Za-z0-9-]{36}$"


class StartStressEvent(InputModel):
    run_id: RunId
    auto_scaling_group_name: str = Field(pattern=r"^scalelab-[A-Za-z0-9-]+$", max_length=255)
    duration_seconds: int = Field(ge=MIN_DURATION_SECONDS, le=MAX_DURATION_SECONDS)


class StartStressResult(OutputModel):
    command_id: str
    instance_ids: list[str]
    duration_seconds: int
    started_at: str


class StopStressEvent(InputModel):
    run_id: RunId
    command_id: str = Field(pattern=COMMAND_ID_PATTERN)


class StopStressResult(OutputModel):
    """``cancelled``: this call asked SSM to cancel a command still running.

    ``status``: the command's status as SSM reported it (``NotFound`` when SSM does not know it).
    """

    command_id: str
    cancelled: bool
    status: str
