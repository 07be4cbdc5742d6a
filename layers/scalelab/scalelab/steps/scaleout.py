"""AwaitScaleOut: the workflow waits for the lab's group to launch an instance; Auto Scaling ends the wait.

Two functions meet in the run table:

- ``await_scale_out`` runs as the state machine's ``.waitForTaskToken`` task:
  it stores the task token as the run's waiter, then looks in the run's
  event log for a launch that already happened.
- ``on_scaling_event`` is the target of the EventBridge rule on
  ``aws.autoscaling`` events for ``scalelab-*`` groups: it records every
  event in the run's log, then looks for a waiter to complete.

The event log (one item per EventBridge event id, so a redelivered event is
never logged twice) and the waiter (the task token, the group, when the stress
started, and once claimed, which event claimed it and how it ended) are items
of the run table, kept by ``scalelab.store.scaleout``.

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
from datetime import datetime

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from botocore.exceptions import ClientError

from scalelab.contracts.base import RUN_ID_PATTERN, parse_event
from scalelab.contracts.scaleout import (
    AutoScalingEvent,
    AwaitScaleOutEvent,
    AwaitScaleOutResult,
    Completion,
    IgnoredScalingEvent,
    ScalingActivity,
    ScalingEventResult,
    WaitOutcome,
)
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import InvalidInput, ScaleOutFailed
from scalelab.core.naming import PREFIX
from scalelab.core.observability import logger
from scalelab.store.items import LoggedEvent, Waiter
from scalelab.store.scaleout import ScaleOutTable

SOURCE = "aws.autoscaling"
LAUNCH_SUCCESSFUL = "EC2 Instance Launch Successful"
LAUNCH_UNSUCCESSFUL = "EC2 Instance Launch Unsuccessful"
TERMINATE_SUCCESSFUL = "EC2 Instance Terminate Successful"
HANDLED_DETAIL_TYPES = frozenset({LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL, TERMINATE_SUCCESSFUL})
LAUNCHES = frozenset({LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL})

# Step Functions' answers meaning "nobody waits for this token any more":
# the task timed out, the execution ended, or the token is not (or no longer) valid.
STOPPED_WAITING_CODES = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# SendTaskFailure limits (Step Functions API reference).
CAUSE_MAX = 32_768


# ---- the meeting ------------------------------------------------------------------------


def logged_event(event: AutoScalingEvent) -> LoggedEvent:
    """What the run's log keeps of an event: its id, type, time and activity."""
    activity = event.detail.model_dump(include=set(ScalingActivity.model_fields))
    return LoggedEvent(event_id=event.id, detail_type=event.detail_type, time=event.time, **activity)


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
        "launched_at": utc_iso(event.launched_at.timestamp()),
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


def _tell_step_functions(task_token: str, event: LoggedEvent) -> tuple[WaitOutcome, dict[str, str]]:
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
) -> WaitOutcome | None:
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
            extra={"stress_started_at": waiter.stress_started_at.isoformat(), "new_token": replaced},
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

    logged = logged_event(scaling)
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
