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
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from scalelab.contracts.base import RUN_ID_PATTERN, parse_event
from scalelab.contracts.scaleout import (
    MAX_QUOTED_LAUNCHES,
    AutoScalingDetail,
    AwaitScaleOutEvent,
    AwaitScaleOutResult,
    CheckScaleInEvent,
    CheckScaleOutEvent,
    Completion,
    IgnoredScalingEvent,
    ScaleIn,
    ScaleOut,
    ScaleOutBaseline,
    ScalingActivity,
    ScalingEventResult,
    UnsuccessfulLaunch,
    WaitOutcome,
    grew_beyond,
)
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import InvalidInput, NoScaleIn, NoScaleOut, ScaleOutFailed, ScaleOutTooSlow
from scalelab.core.naming import PREFIX
from scalelab.core.observability import logger
from scalelab.store.scaleout import LoggedEvent, ScaleOutTable, Waiter

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

    from scalelab.contracts.scaling_event import AutoScalingEvent

SOURCE = "aws.autoscaling"
LAUNCH_SUCCESSFUL = "EC2 Instance Launch Successful"
LAUNCH_UNSUCCESSFUL = "EC2 Instance Launch Unsuccessful"
TERMINATE_SUCCESSFUL = "EC2 Instance Terminate Successful"
HANDLED_DETAIL_TYPES = frozenset({LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL, TERMINATE_SUCCESSFUL})
LAUNCHES = frozenset({LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL})

# Step Functions' answers meaning "nobody waits for this token any more":
# the task timed out, the execution ended, or the token is not (or no longer) valid.
STOPPED_WAITING_CODES = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# A launch activity's Description, as DescribeScalingActivities gives it.
LAUNCHING = "Launching a new EC2 instance"
INSTANCE_LAUNCHED = re.compile(r"Launching a new EC2 instance: (i-[0-9a-f]+)")
SUCCESSFUL = "Successful"
FAILED_STATUSES = frozenset({"Failed", "Cancelled"})
# An activity's status while its instance is still being launched (Auto Scaling API reference).
UNDER_WAY_STATUSES = frozenset(
    {
        "PendingSpotBidPlacement",
        "WaitingForSpotInstanceRequestId",
        "WaitingForSpotInstanceId",
        "WaitingForInstanceId",
        "PreInService",
        "InProgress",
        "WaitingForELBConnectionDraining",
        "MidLifecycleAction",
        "WaitingForInstanceWarmup",
    }
)
# Enough history for one run's wait (Auto Scaling keeps six weeks of activities).
MAX_ACTIVITIES = 100
# The reasons a verdict quotes; the report has the activities themselves.
MAX_REASONS = MAX_QUOTED_LAUNCHES


# ---- the meeting ------------------------------------------------------------------------


def logged_event(event: AutoScalingEvent) -> LoggedEvent:
    """What the run's log keeps of an event: its id, type, time and activity."""
    activity = event.detail.model_dump(include=set(ScalingActivity.model_fields))
    return LoggedEvent(
        event_id=event.id,
        detail_type=event.detail_type,
        time=event.time,
        availability_zone=event.detail.availability_zone,
        **activity,
    )


def is_scale_out(
    activity: ScalingActivity, launched_at: datetime, baseline: Waiter | ScaleOutBaseline
) -> bool:
    """A launch is the scale-out only when all three hold: it began once the stress had started,
    its instance was not in the group then, and its Cause says the desired capacity grew beyond
    the group's starting value. A replacement under stress, or an event naming one of the
    original instances, is no scale-out."""
    return (
        launched_at >= baseline.stress_started_at
        and bool(activity.instance_id)
        and activity.instance_id not in baseline.instances_before
        and grew_beyond(activity.cause, baseline.desired_capacity)
    )


def qualifies(event: LoggedEvent, waiter: Waiter | ScaleOutBaseline) -> bool:
    """A successful launch that is the scale-out. An unsuccessful one is only logged: Auto Scaling
    tries again (in another zone, say) until the wait's deadline."""
    return event.detail_type == LAUNCH_SUCCESSFUL and is_scale_out(event, event.launched_at, waiter)


def run_id_of_group(group: str) -> str | None:
    """The run whose group this is (``scalelab-<run id>``), or None for any other group."""
    if not group.startswith(PREFIX):
        return None
    run_id = group.removeprefix(PREFIX)
    return run_id if re.fullmatch(RUN_ID_PATTERN, run_id) else None


def task_output(event: LoggedEvent) -> ScaleOut:
    """What the waiting task returns for the scale-out's event (the state machine's ``$.scale_out``)."""
    return ScaleOut(
        instance_id=event.instance_id,
        launched_at=utc_iso(event.launched_at.timestamp()),
        activity_id=event.activity_id,
        seen_in="event",
        event_id=event.event_id,
        availability_zone=event.availability_zone,
    )


def after_unsuccessful(
    scale_out: ScaleOut, failed: dict[str, tuple[datetime, UnsuccessfulLaunch]]
) -> ScaleOut:
    """``scale_out`` with the launches that failed before it began (Auto Scaling tried another
    zone, say): their count, and the first few, each zone and reason once."""
    launched_at = datetime.fromisoformat(scale_out.launched_at)
    # launched_at is in whole seconds: a failure in the same second counts as before it.
    before = sorted(
        (
            (started, launch)
            for started, launch in failed.values()
            if started.replace(microsecond=0) <= launched_at
        ),
        key=lambda attempt: attempt[0],
    )
    quoted = list(dict.fromkeys(launch for _, launch in before))[:MAX_QUOTED_LAUNCHES]
    return scale_out.model_copy(update={"unsuccessful_launches": len(before), "unsuccessful": quoted})


def _tell_step_functions(
    task_token: str, event: LoggedEvent, logged: list[LoggedEvent], baseline: Waiter
) -> tuple[WaitOutcome, dict[str, str]]:
    try:
        scale_out = after_unsuccessful(task_output(event), _failed_launches([], logged, baseline))
        output = json.dumps(scale_out.model_dump(mode="json"), sort_keys=True)
        client("stepfunctions").send_task_success(taskToken=task_token, output=output)
        return "succeeded", {"task_output": output}
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
    # The run's log so far: the launches that failed before this one, for the verdict to name.
    outcome, details = _tell_step_functions(waiter.task_token, event, table.logged_events(run_id), waiter)
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
    candidates = [event for event in events if qualifies(event, waiter)]
    # The earliest launch decides, as it would have had the token been there first.
    candidates.sort(key=lambda e: (e.launched_at, e.event_id))
    return candidates[0] if candidates else None


def await_scale_out(
    event: AwaitScaleOutEvent, table: ScaleOutTable, now: float | None = None
) -> AwaitScaleOutResult:
    """Store the task token; complete it at once if the group already launched an instance."""
    now = time.time() if now is None else now
    logger.append_keys(run_id=event.run_id)
    replaced = table.put_waiter(event, now)
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
    if not qualifies(logged, waiter):
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
    # Imported here: Powertools' EventBridgeModel is built at import, and only OnScalingEvent needs it.
    from scalelab.contracts.scaling_event import AutoScalingEvent  # noqa: PLC0415

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


# ---- the cross-check at the deadline ------------------------------------------------------------


def check_scale_out(event: CheckScaleOutEvent, table: ScaleOutTable) -> ScaleOut:
    """The wait for an event ran out: decide from the group's scaling activities and the event log.

    Events are best effort (EventBridge may lose or delay them), the activities are Auto Scaling's
    own record: a scale-out seen only there still counts. Without one, the launches that failed
    give AWS's reasons (ScaleOutFailed), a launch still under way is ScaleOutTooSlow, and with
    none at all, NoScaleOut.
    """
    logger.append_keys(run_id=event.run_id)
    activities = launch_activities(event.auto_scaling_group_name)
    logged = [entry for entry in table.logged_events(event.run_id) if entry.detail_type in LAUNCHES]
    seen = [
        _from_activity(activity, activity.start_time)
        for activity in activities
        if activity.status_code == SUCCESSFUL
        and activity.start_time is not None
        and is_scale_out(activity, activity.start_time, event)
    ] + [task_output(entry) for entry in logged if qualifies(entry, event)]
    failed = _failed_launches(activities, logged, event)
    if seen:
        # The earliest launch; an event and an activity of the same launch: the event.
        scale_out = after_unsuccessful(
            min(seen, key=lambda found: (found.launched_at, found.seen_in)), failed
        )
        logger.info("scale-out found at the deadline", extra=scale_out.model_dump(mode="json"))
        return scale_out
    if failed:
        reasons = list(dict.fromkeys(launch.status_message for _, launch in failed.values()))
        raise ScaleOutFailed(
            f"{_launches(len(failed))} failed within {event.waited_seconds} s and none succeeded; AWS said: "
            + "; ".join(f"{reason!r}" for reason in reasons[:MAX_REASONS])
            + (f" (and {len(reasons) - MAX_REASONS} more)" if len(reasons) > MAX_REASONS else "")
        )
    under_way = [
        activity
        for activity in activities
        if activity.status_code in UNDER_WAY_STATUSES
        and activity.start_time is not None
        and activity.start_time >= event.stress_started_at
        and grew_beyond(activity.cause, event.desired_capacity)
    ]
    if under_way:
        started = min(activity.start_time for activity in under_way if activity.start_time is not None)
        asked_after = int((started - event.stress_started_at).total_seconds())
        raise ScaleOutTooSlow(
            f"the scaling policy asked for an instance {asked_after} s after the stress started, but "
            f"its launch was still under way ({under_way[0].status_code}) when the "
            f"{event.waited_seconds} s were up"
        )
    raise NoScaleOut(
        f"no scale-out within {event.waited_seconds} s: neither an Auto Scaling event nor the group's "
        "scaling activities show an instance launched beyond the starting capacity"
    )


def launch_activities(group: str) -> list[AutoScalingDetail]:
    """The group's launch activities, newest first, as DescribeScalingActivities lists them."""
    return _activities(group, LAUNCHING, INSTANCE_LAUNCHED)


def _activities(group: str, kind: str, instance_named: re.Pattern[str]) -> list[AutoScalingDetail]:
    """The group's activities whose Description starts with ``kind``, newest first, each with
    the instance its Description names."""
    pages = (
        client("autoscaling")
        .get_paginator("describe_scaling_activities")
        .paginate(AutoScalingGroupName=group, PaginationConfig={"MaxItems": MAX_ACTIVITIES})
    )
    found = []
    for page in pages:
        for activity in page["Activities"]:
            description = activity.get("Description", "")
            if not description.startswith(kind):
                continue
            instance = instance_named.search(description)
            fields = {**activity, "EC2InstanceId": instance[1] if instance else ""}
            found.append(AutoScalingDetail.model_validate(fields))
    return found


def _from_activity(activity: AutoScalingDetail, started: datetime) -> ScaleOut:
    return ScaleOut(
        instance_id=activity.instance_id,
        launched_at=utc_iso(started.timestamp()),
        activity_id=activity.activity_id,
        seen_in="scaling_activities",
        availability_zone=activity.availability_zone,
    )


def _failed_launches(
    activities: list[AutoScalingDetail], logged: list[LoggedEvent], baseline: Waiter | ScaleOutBaseline
) -> dict[str, tuple[datetime, UnsuccessfulLaunch]]:
    """Each launch that failed once the stress had started, by activity: when, where, AWS's reason."""
    failed: dict[str, tuple[datetime, UnsuccessfulLaunch]] = {}
    attempts: list[tuple[ScalingActivity, datetime | None, str]] = [
        (activity, activity.start_time, activity.availability_zone)
        for activity in activities
        if activity.status_code in FAILED_STATUSES
    ] + [
        (entry, entry.launched_at, entry.availability_zone)
        for entry in logged
        if entry.detail_type == LAUNCH_UNSUCCESSFUL
    ]
    for attempt, started, zone in attempts:
        if started is not None and started >= baseline.stress_started_at:
            reason = attempt.status_message or attempt.description or attempt.cause or "no reason given"
            launch = UnsuccessfulLaunch(availability_zone=zone, status_message=reason)
            failed.setdefault(attempt.activity_id, (started, launch))
    return failed


def _launches(count: int) -> str:
    return "1 launch" if count == 1 else f"{count} launches"


# ---- the scale-in (expectations.scale_in_within_seconds) -----------------------------------------

# How Auto Scaling words a shrinking group in a termination's Cause: the policy's change of the
# desired capacity, then the instance taken out of service for the difference.
CAPACITY_SHRANK = re.compile(r"(?:changing the desired capacity|shrinking the capacity) from (\d+) to (\d+)")
TERMINATING = "Terminating EC2 instance"
INSTANCE_TERMINATED = re.compile(r"Terminating EC2 instance: (i-[0-9a-f]+)")
# Target tracking's scale-in alarm (AlarmLow): 15 one-minute datapoints below the target.
SCALE_IN_ALARM_DATAPOINTS = 15


def shrank_to(cause: str, desired_capacity: int) -> str | None:
    """Auto Scaling's "from X to Y" when the Cause says the capacity shrank to ``desired_capacity``
    or below, else None."""
    for change in CAPACITY_SHRANK.finditer(cause):
        before, after = int(change[1]), int(change[2])
        if before > after and after <= desired_capacity:
            return f"from {before} to {after}"
    return None


def _scaled_in(activity: ScalingActivity, fallback: datetime, event: CheckScaleInEvent) -> bool:
    began = activity.start_time or fallback
    # Auto Scaling's times may come in whole seconds: a termination in the second the load
    # stopped counts.
    return (
        began >= event.load_stopped_at.replace(microsecond=0)
        and bool(activity.instance_id)
        and shrank_to(activity.cause, event.desired_capacity) is not None
    )


def _scale_in_of(
    activity: ScalingActivity, fallback: datetime, event: CheckScaleInEvent, seen_in: str, now: float
) -> ScaleIn:
    return ScaleIn.model_validate(
        {
            "expectation_met": True,
            "checked_at": utc_iso(now),
            "instance_id": activity.instance_id,
            # The group is back once the instance is gone: the activity's end.
            "scaled_in_at": utc_iso((activity.end_time or activity.start_time or fallback).timestamp()),
            "activity_id": activity.activity_id,
            "seen_in": seen_in,
            "capacity_change": shrank_to(activity.cause, event.desired_capacity),
        }
    )


def check_scale_in(event: CheckScaleInEvent, table: ScaleOutTable, now: float | None = None) -> ScaleIn:
    """One poll of the scale-in wait: has the group shrunk back to its starting capacity?

    Each poll reads the run's event log ("EC2 Instance Terminate Successful" events, logged by
    OnScalingEvent). At the deadline the group's scaling activities decide, as for the
    scale-out (events are best effort); with no scale-in there either, NoScaleIn says how
    many instances the group kept.
    """
    now = time.time() if now is None else now
    logger.append_keys(run_id=event.run_id)
    checked_at = utc_iso(now)
    terminations = [
        entry
        for entry in table.logged_events(event.run_id)
        if entry.detail_type == TERMINATE_SUCCESSFUL and _scaled_in(entry, entry.time, event)
    ]
    if terminations:
        first = min(terminations, key=lambda entry: (entry.end_time or entry.time, entry.event_id))
        logger.info("scale-in event found", extra={"event_id": first.event_id})
        return _scale_in_of(first, first.time, event, "event", now)
    waited = int(now - event.load_stopped_at.timestamp())
    if waited < event.within_seconds:
        return ScaleIn(expectation_met=False, checked_at=checked_at)
    activities = [
        activity
        for activity in termination_activities(event.auto_scaling_group_name)
        if activity.status_code == SUCCESSFUL
        and activity.start_time is not None
        and _scaled_in(activity, activity.start_time, event)
    ]
    if activities:
        first_activity = min(activities, key=lambda activity: activity.end_time or event.load_stopped_at)
        logger.info("scale-in found in the activities", extra={"activity": first_activity.activity_id})
        return _scale_in_of(first_activity, event.load_stopped_at, event, "scaling_activities", now)
    raise NoScaleIn(_no_scale_in(event, waited))


def _no_scale_in(event: CheckScaleInEvent, waited: int) -> str:
    groups = client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[event.auto_scaling_group_name]
    )["AutoScalingGroups"]
    stayed = (
        f"the group stayed at {len(groups[0]['Instances'])} instances (desired "
        f"{groups[0]['DesiredCapacity']}, {event.desired_capacity} before the scale-out)"
        if groups
        else "the group is gone"
    )
    return (
        f"no scale-in within {event.within_seconds} s: {stayed} for {waited} s after the load stopped; "
        f"target tracking's scale-in alarm wants {SCALE_IN_ALARM_DATAPOINTS} one-minute datapoints below "
        "the target before it removes an instance (so allow at least 900 s), and a policy with "
        "DisableScaleIn never removes one"
    )


def termination_activities(group: str) -> list[AutoScalingDetail]:
    """The group's termination activities, newest first, as DescribeScalingActivities lists them."""
    return _activities(group, TERMINATING, INSTANCE_TERMINATED)
