"""AwaitScaleOut and OnScalingEvent: the waiting task's payload, Auto Scaling's events, and results."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_pascal

from scalelab.contracts.base import InputModel, OutputModel, RunId, Timestamp, TimestampText
from scalelab.core.naming import resource_names

# What became of a scale-out wait once an event claimed it.
WaitOutcome = Literal["succeeded", "stale"]
Completion = Literal[
    "no_waiter", "not_qualifying", "already_completed", "claimed_elsewhere", "succeeded", "stale"
]

InstanceId = Annotated[str, Field(pattern=r"^i-[0-9a-f]{8,17}$")]
# The most instances a group may have (the MaxSizeCap Parameter allows no more than this).
MAX_GROUP_SIZE = 100
# Text AWS writes in an event (a cause, a status message) is shown to people: bounded, and
# without control characters, so a forged or broken event cannot flood or garble a verdict.
EVENT_TEXT_MAX = 1000
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# How Auto Scaling words a change of desired capacity in an activity's Cause, whatever asked for
# it (a policy's alarm, a person, a schedule). A replacement of an unhealthy instance says
# "in response to an unhealthy instance needing to be replaced" instead.
DESIRED_CHANGE = re.compile(r"changing the desired capacity from (\d+) to (\d+)")
# The unsuccessful launches a scale-out's verdict quotes; the report's activities have them all.
MAX_QUOTED_LAUNCHES = 3
# An availability zone's name is short ("us-east-1a", "use1-az1"): a longer one is cut to this.
ZONE_MAX = 64


def the_runs_group(value: str, info: ValidationInfo) -> str:
    """``value`` when it is the group of the run being validated (``run_id``, validated before it)."""
    run_id = info.data.get("run_id")
    if run_id is not None and value != resource_names(run_id).auto_scaling_group:
        expected = resource_names(run_id).auto_scaling_group
        raise ValueError(
            f"{value!r} is not run {run_id!r}'s group ({expected!r}); Auto Scaling events are "
            "matched to a run by its group's name, so pass the group Provision created"
        )
    return value


class ScaleOutBaseline(InputModel):
    """The group as it was when the stress began: a scale-out must go beyond it."""

    run_id: RunId
    auto_scaling_group_name: str = Field(min_length=1, max_length=255)
    stress_started_at: Timestamp
    # The instances the stress was sent to: a launch of one of these is no scale-out.
    instances_before: list[InstanceId] = Field(min_length=1, max_length=MAX_GROUP_SIZE)
    desired_capacity: int = Field(ge=1, le=MAX_GROUP_SIZE)

    @field_validator("auto_scaling_group_name")
    @classmethod
    def _the_runs_group(cls, value: str, info: ValidationInfo) -> str:
        return the_runs_group(value, info)


class AwaitScaleOutEvent(ScaleOutBaseline):
    """The Payload of the AwaitScaleOut task (lambda:invoke.waitForTaskToken)."""

    task_token: str = Field(min_length=1, max_length=2048)


class CheckScaleOutEvent(ScaleOutBaseline):
    """What the state machine hands CheckScaleOut when the wait for an event ran out."""

    waited_seconds: int = Field(ge=1, le=86_400)


def grew_beyond(cause: str, desired_capacity: int) -> bool:
    """Whether an activity's Cause says the desired capacity grew, to above ``desired_capacity``."""
    change = DESIRED_CHANGE.search(cause)
    return change is not None and int(change[1]) < int(change[2]) and int(change[2]) > desired_capacity


def _as_data(value: Any) -> Any:
    """Text from an event or an activity, kept as data: bounded, control characters replaced."""
    if not isinstance(value, str):
        return value
    printable = CONTROL_CHARACTERS.sub("?", value)
    return printable if len(printable) <= EVENT_TEXT_MAX else printable[: EVENT_TEXT_MAX - 1] + "…"


EventText = Annotated[str, BeforeValidator(_as_data)]


def _details_as_object(value: Any) -> Any:
    """An event's ``Details`` is an object; an activity's (DescribeScalingActivities) is the same
    object as JSON text. Either becomes a dict; text that is not a JSON object becomes empty."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class ScalingActivity(BaseModel):
    """The fields of an Auto Scaling activity that scalelab reads and keeps in the run's event log."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    auto_scaling_group_name: str = Field(min_length=1)
    activity_id: str = Field(min_length=1)
    status_code: str
    status_message: EventText = ""
    instance_id: str = ""
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None
    cause: EventText = ""
    description: EventText = ""


def _event_field_name(name: str) -> str:
    """The field's name in an Auto Scaling event's ``detail`` (PascalCase, one exception)."""
    return "EC2InstanceId" if name == "instance_id" else to_pascal(name)


class AutoScalingDetail(ScalingActivity):
    """``detail`` of an Auto Scaling launch or terminate event.

    Fields as in the Amazon EC2 Auto Scaling event reference; AWS may add
    fields at any time, so unknown ones are ignored.
    """

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        alias_generator=_event_field_name,
        defer_build=True,
    )

    request_id: str | None = None
    details: Annotated[dict[str, Any], BeforeValidator(_details_as_object)] = Field(default_factory=dict)
    origin: str | None = None
    destination: str | None = None

    @property
    def availability_zone(self) -> str:
        """The zone the launch was in (``Details``), or "" when the activity does not say."""
        zone = self.details.get("Availability Zone")
        return _as_data(zone)[:ZONE_MAX] if isinstance(zone, str) else ""


class AwaitScaleOutResult(OutputModel):
    """What await_scale_out did (Step Functions ignores it for waitForTaskToken; logs and tests read it)."""

    run_id: str
    waiting: bool
    completed_by: str | None = None
    outcome: WaitOutcome | None = None


class UnsuccessfulLaunch(OutputModel):
    """A launch Auto Scaling tried once the stress had started, and failed: where, and AWS's reason."""

    availability_zone: str = ""
    status_message: str = ""


class ScaleOut(OutputModel):
    """The scale-out the run waited for (the state machine's ``$.scale_out``), and where it was seen:
    in an Auto Scaling event, or in the group's scaling activities when no event reported it."""

    instance_id: str
    launched_at: TimestampText
    activity_id: str
    seen_in: Literal["event", "scaling_activities"]
    event_id: str | None = None
    availability_zone: str = ""
    # The launches that failed before this one succeeded (another zone's, say): how many, and the
    # first few, each zone and reason once, for the verdict to quote.
    unsuccessful_launches: int = 0
    unsuccessful: list[UnsuccessfulLaunch] = Field(default_factory=list, max_length=MAX_QUOTED_LAUNCHES)


class IgnoredScalingEvent(OutputModel):
    ignored: str


class ScalingEventResult(OutputModel):
    """What on_scaling_event did with one event: logged (or a duplicate) and what became of the waiter."""

    run_id: str
    event_id: str
    detail_type: str
    duplicate: bool
    completion: Completion


# ---- the scale-in (expectations.scale_in_within_seconds) ------------------------------------


class CheckScaleInEvent(InputModel):
    """What the state machine hands CheckScaleIn on each poll once the load stopped."""

    run_id: RunId
    auto_scaling_group_name: str = Field(min_length=1, max_length=255)
    # When StopStress had stopped the load (the ScaleIn wait's start): a scale-in counts from here.
    load_stopped_at: Timestamp
    # The group's desired capacity before the scale-out: the scale-in must come back to it.
    desired_capacity: int = Field(ge=1, le=MAX_GROUP_SIZE)
    within_seconds: int = Field(ge=1, le=86_400)

    @field_validator("auto_scaling_group_name")
    @classmethod
    def _the_runs_group(cls, value: str, info: ValidationInfo) -> str:
        return the_runs_group(value, info)


class ScaleIn(OutputModel):
    """One look at the scale-in (the state machine's ``$.scale_in``): met once an instance was
    terminated because the desired capacity shrank back to the starting one, and where that was seen."""

    expectation_met: bool
    checked_at: TimestampText
    instance_id: str | None = None
    scaled_in_at: TimestampText | None = None
    activity_id: str | None = None
    seen_in: Literal["event", "scaling_activities"] | None = None
    # Auto Scaling's words for the change ("from 3 to 2"), quoted in the verdict.
    capacity_change: str | None = None
