"""AwaitScaleOut and OnScalingEvent: the waiting task's payload, Auto Scaling's events, and results."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_pascal

from scalelab.contracts.base import InputModel, OutputModel, RunId, Timestamp
from scalelab.core.naming import resource_names

# What became of a scale-out wait once an event claimed it.
WaitOutcome = Literal["succeeded", "failed", "stale"]
Completion = Literal[
    "no_waiter", "not_qualifying", "already_completed", "claimed_elsewhere", "succeeded", "failed", "stale"
]


class AwaitScaleOutEvent(InputModel):
    """The Payload of the AwaitScaleOut task (lambda:invoke.waitForTaskToken)."""

    run_id: RunId
    auto_scaling_group_name: str = Field(min_length=1, max_length=255)
    task_token: str = Field(min_length=1, max_length=2048)
    stress_started_at: Timestamp

    @field_validator("auto_scaling_group_name")
    @classmethod
    def _the_runs_group(cls, value: str, info: ValidationInfo) -> str:
        run_id = info.data.get("run_id")
        if run_id is not None and value != resource_names(run_id).auto_scaling_group:
            expected = resource_names(run_id).auto_scaling_group
            raise ValueError(
                f"{value!r} is not run {run_id!r}'s group ({expected!r}); Auto Scaling events are "
                "matched to a run by its group's name, so pass the group Provision created"
            )
        return value


class ScalingActivity(BaseModel):
    """The fields of an Auto Scaling activity that scalelab reads and keeps in the run's event log."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    auto_scaling_group_name: str = Field(min_length=1)
    activity_id: str = Field(min_length=1)
    status_code: str
    status_message: str = ""
    instance_id: str = ""
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None
    cause: str = ""
    description: str = ""


def _event_field_name(name: str) -> str:
    """The field's name in an Auto Scaling event's ``detail`` (PascalCase, one exception)."""
    return "EC2InstanceId" if name == "instance_id" else to_pascal(name)


class AutoScalingDetail(ScalingActivity):
    """``detail`` of an Auto Scaling launch or terminate event.

    Fields as in the Amazon EC2 Auto Scaling event reference; AWS may add
    fields at any time, so unknown ones are ignored.
    """

    model_config = ConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, alias_generator=_event_field_name
    )

    request_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    origin: str | None = None
    destination: str | None = None


class AutoScalingEvent(EventBridgeModel):
    """An EventBridge event from Auto Scaling with its detail typed."""

    # EventBridge's id is a UUID; the bound keeps the run log's sort key within DynamoDB's 1024 bytes.
    id: str = Field(min_length=1, max_length=128)
    time: Timestamp
    detail: AutoScalingDetail


class AwaitScaleOutResult(OutputModel):
    """What await_scale_out did (Step Functions ignores it for waitForTaskToken; logs and tests read it)."""

    run_id: str
    waiting: bool
    completed_by: str | None = None
    outcome: WaitOutcome | None = None


class IgnoredScalingEvent(OutputModel):
    ignored: str


class ScalingEventResult(OutputModel):
    """What on_scaling_event did with one event: logged (or a duplicate) and what became of the waiter."""

    run_id: str
    event_id: str
    detail_type: str
    duplicate: bool
    completion: Completion
