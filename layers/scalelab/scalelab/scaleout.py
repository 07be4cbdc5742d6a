"""AwaitScaleOut: the workflow waits for the lab's group to launch an instance; Auto Scaling ends the wait.

Two functions meet in the run table:

- ``await_scale_out`` runs as the state machine's ``.waitForTaskToken`` task:
  it stores the task token as the run's waiter, then looks in the run's
  event log for a launch that already happened.
- ``on_scaling_event`` is the target of the EventBridge rule on
  ``aws.autoscaling`` events for ``scalelab-*`` groups: it records every
  event in the run's log, then looks for a waiter to complete.

Items (partition key ``pk``, sort key ``sk``, next to the run record of
``scalelab.ledger``; every item expires with the run record's TTL):

- ``RUN#<run id>`` / ``EVENT#<event id>``: one Auto Scaling event, keyed by
  EventBridge's event id, so a redelivered event is never logged twice.
- ``RUN#<run id>`` / ``SCALEOUT_WAIT``: the waiter: the task token, the
  group, when the stress started; once claimed, ``completed_by`` (the event
  id) and, once Step Functions has been told, ``completed_at`` and
  ``outcome``.

The meeting is race-free. Each side writes its own item first and only then
reads the other side with a strongly consistent read, so whichever of the
two reads comes last sees both items: an event and a token can never miss
each other, in either order. Whoever sees both claims the waiter with a
conditional update (same token, not claimed yet); only the winner of the
claim calls Step Functions, so a token is completed once. A claim whose call
to Step Functions failed is taken up again by a redelivery of the same event
(or a retried await), never by another event.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import BaseModel
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from scalelab.aws import client, error_code
from scalelab.clock import as_utc
from scalelab.errors import InvalidInput, ScalelabError
from scalelab.models import RUN_ID_PATTERN, InputModel, OutputModel, Timestamp, parse_event
from scalelab.naming import PREFIX, resource_names
from scalelab.observability import logger
from scalelab.settings import TableSettings

SOURCE = "aws.autoscaling"
LAUNCH_SUCCESSFUL = "EC2 Instance Launch Successful"
LAUNCH_UNSUCCESSFUL = "EC2 Instance Launch Unsuccessful"
TERMINATE_SUCCESSFUL = "EC2 Instance Terminate Successful"
HANDLED_DETAIL_TYPES = frozenset({LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL, TERMINATE_SUCCESSFUL})
LAUNCHES = frozenset({LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL})

WAITER_SK = "SCALEOUT_WAIT"
EVENT_SK_PREFIX = "EVENT#"

# Step Functions' answers meaning "nobody waits for this token any more":
# the task timed out, the execution ended, or the token is not (or no longer) valid.
STOPPED_WAITING_CODES = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# SendTaskFailure limits (Step Functions API reference).
CAUSE_MAX = 32_768

Outcome = Literal["succeeded", "failed", "stale"]
OUTCOMES: dict[str, Outcome] = {"succeeded": "succeeded", "failed": "failed", "stale": "stale"}
Completion = Literal[
    "no_waiter", "not_qualifying", "already_completed", "claimed_elsewhere", "succeeded", "failed", "stale"
]


class ScaleOutFailed(ScalelabError):
    """The group could not launch an instance: the error the waiting task fails with.

    Never raised in Python: its name is the ``error`` of ``SendTaskFailure``,
    which is what the state machine's ``Catch`` sees.
    """


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat()


# ---- events ---------------------------------------------------------------------------


class AwaitScaleOutEvent(InputModel):
    """The Payload of the AwaitScaleOut task (lambda:invoke.waitForTaskToken)."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
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


class AutoScalingDetail(BaseModel):
    """``detail`` of an Auto Scaling launch or terminate event.

    Fields as in the Amazon EC2 Auto Scaling event reference; AWS may add
    fields at any time, so unknown ones are ignored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    auto_scaling_group_name: str = Field(alias="AutoScalingGroupName", min_length=1)
    activity_id: str = Field(alias="ActivityId", min_length=1)
    status_code: str = Field(alias="StatusCode")
    status_message: str = Field(alias="StatusMessage", default="")
    instance_id: str = Field(alias="EC2InstanceId", default="")
    start_time: Timestamp | None = Field(alias="StartTime", default=None)
    end_time: Timestamp | None = Field(alias="EndTime", default=None)
    cause: str = Field(alias="Cause", default="")
    description: str = Field(alias="Description", default="")
    request_id: str | None = Field(alias="RequestId", default=None)
    details: dict[str, Any] = Field(alias="Details", default_factory=dict)
    origin: str | None = Field(alias="Origin", default=None)
    destination: str | None = Field(alias="Destination", default=None)


class AutoScalingEvent(EventBridgeModel):
    """An EventBridge event from Auto Scaling with its detail typed."""

    # EventBridge's id is a UUID; the bound keeps the run log's sort key within DynamoDB's 1024 bytes.
    id: str = Field(min_length=1, max_length=128)
    time: Timestamp
    detail: AutoScalingDetail


# ---- results --------------------------------------------------------------------------


class AwaitScaleOutResult(OutputModel):
    """What await_scale_out did (Step Functions ignores it for waitForTaskToken; logs and tests read it)."""

    run_id: str
    waiting: bool
    completed_by: str | None = None
    outcome: Outcome | None = None


class IgnoredScalingEvent(OutputModel):
    ignored: str


class ScalingEventResult(OutputModel):
    """What on_scaling_event did with one event: logged (or a duplicate) and what became of the waiter."""

    run_id: str
    event_id: str
    detail_type: str
    duplicate: bool
    completion: Completion


# ---- the run's event log and waiter -----------------------------------------------------


@dataclass(frozen=True)
class LoggedEvent:
    event_id: str
    detail_type: str
    time: datetime
    auto_scaling_group_name: str
    activity_id: str
    status_code: str
    status_message: str = ""
    instance_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    cause: str = ""
    description: str = ""

    @classmethod
    def from_event(cls, event: AutoScalingEvent) -> LoggedEvent:
        detail = event.detail
        return cls(
            event_id=event.id,
            detail_type=event.detail_type,
            time=as_utc(event.time),
            auto_scaling_group_name=detail.auto_scaling_group_name,
            activity_id=detail.activity_id,
            status_code=detail.status_code,
            status_message=detail.status_message,
            instance_id=detail.instance_id,
            start_time=as_utc(detail.start_time) if detail.start_time else None,
            end_time=as_utc(detail.end_time) if detail.end_time else None,
            cause=detail.cause,
            description=detail.description,
        )

    @property
    def launched_at(self) -> datetime:
        """When the launch began: the activity's StartTime, else the event's time."""
        return self.start_time or self.time


@dataclass(frozen=True)
class Waiter:
    task_token: str
    auto_scaling_group_name: str
    stress_started_at: datetime
    completed_by: str | None = None
    completed_at: int | None = None
    outcome: Outcome | None = None

    @property
    def claimed(self) -> bool:
        return self.completed_by is not None

    @property
    def finished(self) -> bool:
        return self.completed_at is not None


def _run_pk(run_id: str) -> dict[str, str]:
    return {"S": f"RUN#{run_id}"}


def _waiter_key(run_id: str) -> dict[str, Any]:
    return {"pk": _run_pk(run_id), "sk": {"S": WAITER_SK}}


def _s(item: dict[str, Any], name: str) -> str | None:
    value: str | None = item.get(name, {}).get("S")
    return value


def _event_item(run_id: str, event: LoggedEvent, now: float, expires_at: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": _run_pk(run_id),
        "sk": {"S": f"{EVENT_SK_PREFIX}{event.event_id}"},
        "run_id": {"S": run_id},
        "event_id": {"S": event.event_id},
        "detail_type": {"S": event.detail_type},
        "time": {"S": _iso(event.time)},
        "auto_scaling_group_name": {"S": event.auto_scaling_group_name},
        "activity_id": {"S": event.activity_id},
        "status_code": {"S": event.status_code},
        "status_message": {"S": event.status_message},
        "instance_id": {"S": event.instance_id},
        "cause": {"S": event.cause},
        "description": {"S": event.description},
        "recorded_at": {"N": str(int(now))},
        "expires_at": {"N": str(expires_at)},
    }
    if event.start_time is not None:
        item["start_time"] = {"S": _iso(event.start_time)}
    if event.end_time is not None:
        item["end_time"] = {"S": _iso(event.end_time)}
    return item


def _logged_event(item: dict[str, Any]) -> LoggedEvent:
    start, end = _s(item, "start_time"), _s(item, "end_time")
    return LoggedEvent(
        event_id=_s(item, "event_id") or "",
        detail_type=_s(item, "detail_type") or "",
        time=datetime.fromisoformat(_s(item, "time") or "1970-01-01T00:00:00+00:00"),
        auto_scaling_group_name=_s(item, "auto_scaling_group_name") or "",
        activity_id=_s(item, "activity_id") or "",
        status_code=_s(item, "status_code") or "",
        status_message=_s(item, "status_message") or "",
        instance_id=_s(item, "instance_id") or "",
        start_time=datetime.fromisoformat(start) if start else None,
        end_time=datetime.fromisoformat(end) if end else None,
        cause=_s(item, "cause") or "",
        description=_s(item, "description") or "",
    )


class ScaleOutTable:
    """The run's Auto Scaling event log and scale-out waiter, in the run table."""

    def __init__(self, settings: TableSettings) -> None:
        self._name = settings.table_name
        self._ttl_seconds = settings.run_record_ttl_days * 86_400
        self._ddb = client("dynamodb")

    def _expires_at(self, now: float) -> int:
        return int(now) + self._ttl_seconds

    # ---- the event log -----------------------------------------------------------------

    def record_event(self, run_id: str, event: LoggedEvent, now: float) -> bool:
        """Log an event once per EventBridge event id; False when it was already logged."""
        try:
            self._ddb.put_item(
                TableName=self._name,
                Item=_event_item(run_id, event, now, self._expires_at(now)),
                ConditionExpression="attribute_not_exists(sk)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def logged_events(self, run_id: str) -> list[LoggedEvent]:
        pages = self._ddb.get_paginator("query").paginate(
            TableName=self._name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": _run_pk(run_id), ":prefix": {"S": EVENT_SK_PREFIX}},
            ConsistentRead=True,
        )
        return [_logged_event(item) for page in pages for item in page.get("Items", [])]

    # ---- the waiter --------------------------------------------------------------------

    def put_waiter(
        self, run_id: str, group: str, task_token: str, stress_started_at: datetime, now: float
    ) -> bool:
        """Store the token; False when this very token is stored already (a retried invocation).

        A different token replaces the waiter whole, claim included: each token
        is a wait of its own, and the event log still holds every event for it.
        """
        try:
            self._ddb.update_item(
                TableName=self._name,
                Key=_waiter_key(run_id),
                UpdateExpression=(
                    "SET run_id = :run, task_token = :token, auto_scaling_group_name = :group, "
                    "stress_started_at = :stress, waiting_since = :now, expires_at = :ttl "
                    "REMOVE completed_by, claimed_at, completed_at, outcome, task_output, task_error, "
                    "task_cause, stale_code"
                ),
                ConditionExpression="attribute_not_exists(task_token) OR task_token <> :token",
                ExpressionAttributeValues={
                    ":run": {"S": run_id},
                    ":token": {"S": task_token},
                    ":group": {"S": group},
                    ":stress": {"S": _iso(stress_started_at)},
                    ":now": {"N": str(int(now))},
                    ":ttl": {"N": str(self._expires_at(now))},
                },
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def load_waiter(self, run_id: str) -> Waiter | None:
        found = self._ddb.get_item(TableName=self._name, Key=_waiter_key(run_id), ConsistentRead=True)
        item = found.get("Item")
        if item is None:
            return None
        return Waiter(
            task_token=_s(item, "task_token") or "",
            auto_scaling_group_name=_s(item, "auto_scaling_group_name") or "",
            stress_started_at=datetime.fromisoformat(_s(item, "stress_started_at") or ""),
            completed_by=_s(item, "completed_by"),
            completed_at=int(item["completed_at"]["N"]) if "completed_at" in item else None,
            outcome=OUTCOMES.get(_s(item, "outcome") or ""),
        )

    def claim(self, run_id: str, task_token: str, event_id: str, now: float) -> bool:
        """Claim the waiter for one event; only the caller that gets True may complete the token.

        The same event may claim again while its completion is unfinished (a
        redelivery after Step Functions could not be reached); no other may.
        """
        try:
            self._ddb.update_item(
                TableName=self._name,
                Key=_waiter_key(run_id),
                UpdateExpression="SET completed_by = :event, claimed_at = :now",
                ConditionExpression=(
                    "task_token = :token AND (attribute_not_exists(completed_by) "
                    "OR (completed_by = :event AND attribute_not_exists(completed_at)))"
                ),
                ExpressionAttributeValues={
                    ":token": {"S": task_token},
                    ":event": {"S": event_id},
                    ":now": {"N": str(int(now))},
                },
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def finish(
        self,
        run_id: str,
        *,
        task_token: str,
        event_id: str,
        outcome: Outcome,
        details: dict[str, str],
        now: float,
    ) -> None:
        """Note what Step Functions answered; a real completion always wins over "stale"."""
        values: dict[str, Any] = {
            ":token": {"S": task_token},
            ":event": {"S": event_id},
            ":now": {"N": str(int(now))},
            ":outcome": {"S": outcome},
        }
        assignments = ["completed_at = if_not_exists(completed_at, :now)"]
        assignments.append(
            "outcome = if_not_exists(outcome, :outcome)" if outcome == "stale" else "outcome = :outcome"
        )
        for index, (name, value) in enumerate(sorted(details.items())):
            assignments.append(f"{name} = :d{index}")
            values[f":d{index}"] = {"S": value}
        try:
            self._ddb.update_item(
                TableName=self._name,
                Key=_waiter_key(run_id),
                UpdateExpression="SET " + ", ".join(assignments),
                ConditionExpression="task_token = :token AND completed_by = :event",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            logger.info("the waiter was replaced by a newer token meanwhile", extra={"event_id": event_id})


# ---- the meeting ------------------------------------------------------------------------


def qualifies(event: LoggedEvent, stress_started_at: datetime) -> bool:
    """A launch (successful or not) that began once the stress had started; terminations never do."""
    return event.detail_type in LAUNCHES and event.launched_at >= stress_started_at


def run_id_of_group(group: str) -> str | None:
    """The run whose group this is (``scalelab-<run id>``), or None for any other group."""
    if not group.startswith(PREFIX):
        return None
    run_id = group.removeprefix(PREFIX)
    return run_id if re.fullmatch(RUN_ID_PATTERN, run_id) else None


def task_output(event: LoggedEvent) -> dict[str, str]:
    """What the waiting task returns on a successful launch (the state machine's ``$.scale_out``)."""
    return {
        "instance_id": event.instance_id,
        "launched_at": _iso(event.launched_at),
        "event_id": event.event_id,
        "activity_id": event.activity_id,
    }


def failure_cause(event: LoggedEvent) -> str:
    """AWS's own words for why the launch failed."""
    cause = (
        event.status_message
        or event.description
        or event.cause
        or f"Auto Scaling could not launch an instance (status {event.status_code}, "
        f"activity {event.activity_id})"
    )
    return cause[:CAUSE_MAX]


def _tell_step_functions(task_token: str, event: LoggedEvent) -> tuple[Outcome, dict[str, str]]:
    states = client("stepfunctions")
    try:
        if event.detail_type == LAUNCH_SUCCESSFUL:
            output = json.dumps(task_output(event), sort_keys=True)
            states.send_task_success(taskToken=task_token, output=output)
            return "succeeded", {"task_output": output}
        cause = failure_cause(event)
        states.send_task_failure(taskToken=task_token, error=ScaleOutFailed.__name__, cause=cause)
        return "failed", {"task_error": ScaleOutFailed.__name__, "task_cause": cause}
    except ClientError as exc:
        code = error_code(exc)
        if code not in STOPPED_WAITING_CODES:
            raise
        logger.warning(
            "the workflow stopped waiting for this scale-out; nothing to complete",
            extra={"code": code, "event_id": event.event_id},
        )
        return "stale", {"stale_code": code}


def _complete(
    table: ScaleOutTable, run_id: str, waiter: Waiter, event: LoggedEvent, now: float
) -> Outcome | None:
    """Claim the waiter for ``event`` and, if the claim is ours, complete the token (None: not ours)."""
    if not table.claim(run_id, waiter.task_token, event.event_id, now):
        logger.info("another event or a newer token holds the waiter", extra={"event_id": event.event_id})
        return None
    outcome, details = _tell_step_functions(waiter.task_token, event)
    table.finish(
        run_id,
        task_token=waiter.task_token,
        event_id=event.event_id,
        outcome=outcome,
        details=details,
        now=now,
    )
    logger.info("scale-out wait completed", extra={"event_id": event.event_id, "outcome": outcome})
    return outcome


def _first_qualifying(events: list[LoggedEvent], waiter: Waiter) -> LoggedEvent | None:
    if waiter.claimed:
        # A claim whose completion never finished: take it up with the same event.
        return next((event for event in events if event.event_id == waiter.completed_by), None)
    candidates = [event for event in events if qualifies(event, waiter.stress_started_at)]
    # The earliest launch decides, as it would have had the token been there first.
    candidates.sort(key=lambda e: (e.launched_at, e.detail_type != LAUNCH_SUCCESSFUL, e.event_id))
    return candidates[0] if candidates else None


def await_scale_out(
    event: AwaitScaleOutEvent, table: ScaleOutTable, now: float | None = None
) -> AwaitScaleOutResult:
    """Store the task token; complete it at once if the group already launched an instance."""
    now = time.time() if now is None else now
    logger.append_keys(run_id=event.run_id)
    replaced = table.put_waiter(
        event.run_id, event.auto_scaling_group_name, event.task_token, event.stress_started_at, now
    )
    waiter = table.load_waiter(event.run_id)
    if waiter is None or waiter.task_token != event.task_token:
        logger.warning("a newer task token replaced this one meanwhile; it completes that one instead")
        return AwaitScaleOutResult(run_id=event.run_id, waiting=True)
    if waiter.finished:
        logger.info("this token was completed already", extra={"completed_by": waiter.completed_by})
        return AwaitScaleOutResult(
            run_id=event.run_id, waiting=False, completed_by=waiter.completed_by, outcome=waiter.outcome
        )

    target = _first_qualifying(table.logged_events(event.run_id), waiter)
    if target is None:
        logger.info(
            "waiting for the group to launch an instance",
            extra={"stress_started_at": _iso(waiter.stress_started_at), "new_token": replaced},
        )
        return AwaitScaleOutResult(run_id=event.run_id, waiting=True)

    outcome = _complete(table, event.run_id, waiter, target, now)
    if outcome is None:
        current = table.load_waiter(event.run_id)
        completed_by = current.completed_by if current else None
        return AwaitScaleOutResult(
            run_id=event.run_id, waiting=completed_by is None, completed_by=completed_by
        )
    return AwaitScaleOutResult(
        run_id=event.run_id, waiting=False, completed_by=target.event_id, outcome=outcome
    )


def _completion_for(table: ScaleOutTable, run_id: str, logged: LoggedEvent, now: float) -> Completion:
    waiter = table.load_waiter(run_id)
    if waiter is None:
        return "no_waiter"
    if waiter.finished:
        return "already_completed"
    if waiter.claimed and waiter.completed_by != logged.event_id:
        return "claimed_elsewhere"
    if not qualifies(logged, waiter.stress_started_at):
        return "not_qualifying"
    return _complete(table, run_id, waiter, logged, now) or "claimed_elsewhere"


def on_scaling_event(
    event: EventBridgeModel, table: ScaleOutTable, now: float | None = None
) -> ScalingEventResult | IgnoredScalingEvent:
    """Record an Auto Scaling event in its run's log and complete the run's waiter if it qualifies."""
    now = time.time() if now is None else now
    if event.source != SOURCE:
        return IgnoredScalingEvent(ignored=f"source {event.source!r} is not {SOURCE!r}")
    if event.detail_type not in HANDLED_DETAIL_TYPES:
        return IgnoredScalingEvent(
            ignored=f"detail-type {event.detail_type!r} is not a launch or a termination"
        )
    scaling = parse_event(event.model_dump(by_alias=True), AutoScalingEvent, "Auto Scaling event")
    group = scaling.detail.auto_scaling_group_name
    run_id = run_id_of_group(group)
    if run_id is None:
        return IgnoredScalingEvent(ignored=f"group {group!r} is not a scalelab run's group")
    logger.append_keys(run_id=run_id, event_id=scaling.id)
    if scaling.detail_type == LAUNCH_SUCCESSFUL and not scaling.detail.instance_id:
        raise InvalidInput(
            "invalid Auto Scaling event: detail.EC2InstanceId: a launch that succeeded must name its "
            "instance; this is not an event as Auto Scaling sends it"
        )

    logged = LoggedEvent.from_event(scaling)
    duplicate = not table.record_event(run_id, logged, now)
    completion = _completion_for(table, run_id, logged, now)
    logger.info(
        "Auto Scaling event",
        extra={"detail_type": logged.detail_type, "duplicate": duplicate, "completion": completion},
    )
    return ScalingEventResult(
        run_id=run_id,
        event_id=logged.event_id,
        detail_type=logged.detail_type,
        duplicate=duplicate,
        completion=completion,
    )
