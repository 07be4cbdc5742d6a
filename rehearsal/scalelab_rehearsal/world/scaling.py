"""The policy's alarms, the scaling activity and its Auto Scaling events.

The group's target-tracking policy names its metric (PredefinedMetricType) and its
TargetValue, and for ALBRequestCountPerTarget the target group (ResourceLabel); the
world reads the three from the policy Provision put and evaluates that metric, as
``metrics.Metrics.value`` computes it each minute: the group's average CPU, its
instances' average bytes received or sent in the minute, or the target group's
requests per healthy target in the minute.

Target tracking's scale-out alarm needs ``ALARM_DATAPOINTS`` one-minute
datapoints above the target (detailed monitoring), then the group's desired
capacity grows by one (within MaxSize), moto launches the instance, and an
"EC2 Instance Launch Successful" event with the shape of AWS's own is put on
the default event bus. An instance's CPU counts only once it has warmed up (the
group's DefaultInstanceWarmup after it is InService), and a new instance warms
up before the policy acts again.

A scenario's launch may fail first, with EC2's status message (a Failed activity and an
"EC2 Instance Launch Unsuccessful" event, both naming the zone the message names): then nothing
more happens before the deadline, or Auto Scaling launches in another zone at once (its default
balanced-best-effort distribution; moto would put every instance in the group's first subnet, so
the world moves the new one to another zone's subnet), or it keeps trying and failing. A
scenario may also lose every event, as EventBridge may.

For CPU the alarm is computed from when the burns started and ended (``stress.high_cpu_window``),
so a busy machine cannot make the world miss it; for the load's metrics from the one-minute
values in a row above the target, each read when the world's minute ends. Every simulated minute
the metric's value goes to the policy's AlarmHigh (``metrics.py`` puts the datapoints; made by
``moto_fixes`` as target tracking makes it) is set with SetAlarmState: ``OK``
once a datapoint is at or below the target, ``ALARM`` when the scale-out is
triggered, so its history shows what the alarm saw.

The scale-in: the policy's AlarmLow wants ``SCALE_IN_ALARM_DATAPOINTS`` datapoints in a row
below ``SCALE_IN_THRESHOLD_FRACTION`` of the target; then the desired capacity shrinks by one
(never below MinSize), moto terminates an instance (``moto_fixes`` records the termination with
the alarm's Cause) and an "EC2 Instance Terminate Successful" event goes on the default bus. Only
a scenario that ``scales_in`` plays it (the others' policies never scale in, as with
DisableScaleIn): on the world's clock AlarmLow's 15 minutes pass in a quarter of a real second,
and would undo every scale-out before a test or a person looked at it.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from moto.autoscaling.models import autoscaling_backends
from moto.cloudwatch.models import cloudwatch_backends

from scalelab_rehearsal import moto_fixes
from scalelab_rehearsal.emulator import ACCOUNT, REGION, Emulator
from scalelab_rehearsal.world.clock import Clock, now_iso
from scalelab_rehearsal.world.health import Health
from scalelab_rehearsal.world.metrics import CPU, Metrics
from scalelab_rehearsal.world.scenarios import (
    AFTER_FAILURE_OTHER_ZONE,
    AFTER_FAILURE_RETRY,
    Scenario,
)
from scalelab_rehearsal.world.stress import Stress
from scalelab_rehearsal.world.timings import (
    ALARM_DATAPOINTS,
    DATAPOINT_SECONDS,
    FALLBACK_WARMUP_SECONDS,
    INSTANCE_BOOT_SECONDS,
    SCALE_IN_ALARM_DATAPOINTS,
    SCALE_IN_THRESHOLD_FRACTION,
)

# The zone the scenarios' failed launches name in their status messages (scenarios.py).
FAILED_ZONE = REGION + "a"

# After a launch failed for the vCPU quota, Auto Scaling tries again, backing off. AWS
# publishes no figure; the world's: a minute, doubling, at most an hour.
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0


@dataclass
class _Group:
    # CPU above the target before this moment does not count towards the next alarm.
    not_before: float = 0.0
    launching: bool = False
    failed_once: bool = False
    replaced_one: bool = False
    known_instances: set[str] = field(default_factory=set)
    next_datapoint: float = 0.0  # world's clock
    low_datapoints: int = 0  # in a row below the scale-in threshold
    high_datapoints: int = 0  # in a row above the target (the load's metrics; CPU has its window)


@dataclass(frozen=True)
class Policy:
    """What the world reads of the group's target-tracking policy."""

    metric_type: str  # PredefinedMetricType
    target: float  # TargetValue
    resource_label: str = ""  # ALBRequestCountPerTarget's target group


class Scaling:
    """Each scalelab group's alarm and scale-out, looked at on every tick of the world."""

    def __init__(
        self,
        clock: Clock,
        scenario: Scenario,
        health: Health,
        stress: Stress,
        emulator: Emulator,
        *,
        metrics: Metrics,
    ) -> None:
        self.clock = clock
        self.scenario = scenario
        self.health = health
        self.stress = stress
        self.emulator = emulator
        self.metrics = metrics
        self._groups: dict[str, _Group] = {}

    def tick(self) -> None:
        backend = autoscaling_backends[ACCOUNT][REGION]
        for name, group in list(backend.autoscaling_groups.items()):
            if not name.startswith("scalelab-"):
                continue
            state = self._groups.setdefault(name, _Group())
            in_service = [s.instance.id for s in group.instance_states if s.lifecycle_state == "InService"]
            for instance_id in in_service:
                self.health.seen(instance_id)
            state.known_instances |= set(in_service)
            if (
                self.scenario.replaces_an_instance
                and not state.replaced_one
                and self.stress.burning(in_service)
            ):
                state.replaced_one = True
                self._replace(backend, name, group, in_service[0])
            self._evaluate(backend, name, group, state, in_service)

    def _evaluate(self, backend: Any, name: str, group: Any, state: _Group, in_service: list[str]) -> None:
        """The minute's datapoint when one is due, then whether AlarmHigh fires."""
        policy = self.policy(backend, name)
        target = policy.target if policy is not None else None
        metric_type = policy.metric_type if policy is not None else CPU
        # Warming instances add nothing to the group's aggregated metric.
        warmed = (
            min(self.health.seen(i) for i in in_service) + INSTANCE_BOOT_SECONDS + self._warmup()
            if in_service
            else 0.0
        )
        if in_service and self.clock.now() >= state.next_datapoint:
            state.next_datapoint = self.clock.now() + DATAPOINT_SECONDS
            value = self.metrics.value(metric_type, in_service, policy.resource_label if policy else "")
            if value is not None:
                self._datapoint(backend, name, value, target)
                self._scale_in_datapoint(backend, name, group, state, value=value, target=target)
                counts = (
                    target is not None
                    and value > target
                    and not state.launching
                    and self.clock.now() >= max(state.not_before, warmed)
                )
                state.high_datapoints = state.high_datapoints + 1 if counts else 0
        if target is None or not in_service or state.launching:
            return
        if metric_type == CPU:
            window = self.stress.high_cpu_window(in_service, target)
            if window is None:
                return
            start, end = max(window[0], state.not_before, warmed), window[1]
            fires = end - start >= ALARM_DATAPOINTS * DATAPOINT_SECONDS
        else:
            fires = state.high_datapoints >= ALARM_DATAPOINTS
        if fires:
            state.high_datapoints = 0
            state.not_before = self.clock.now()
            self._set_alarm(
                backend,
                name,
                "ALARM",
                f"Threshold Crossed: {ALARM_DATAPOINTS} datapoints were greater than the threshold "
                f"({target}).",
            )
            self._scale_out(backend, name, group, state)

    def _datapoint(self, backend: Any, name: str, value: float, target: float | None) -> None:
        """What the alarm makes of one minute's value of the metric (``metrics.py`` puts the datapoint)."""
        if target is not None and value <= target:
            self._set_alarm(
                backend,
                name,
                "OK",
                f"Threshold Crossed: 1 datapoint [{value:.1f}] was not greater than the threshold "
                f"({target}).",
            )

    def _scale_in_datapoint(
        self, backend: Any, name: str, group: Any, state: _Group, *, value: float, target: float | None
    ) -> None:
        """What AlarmLow makes of one minute's value: the scale-in after enough low datapoints."""
        if target is None or not self.scenario.scales_in or state.launching:
            state.low_datapoints = 0
            return
        threshold = target * SCALE_IN_THRESHOLD_FRACTION
        state.low_datapoints = state.low_datapoints + 1 if value < threshold else 0
        if state.low_datapoints < SCALE_IN_ALARM_DATAPOINTS or group.desired_capacity <= group.min_size:
            return
        state.low_datapoints = 0
        self._set_alarm(
            backend,
            name,
            "ALARM",
            f"Threshold Crossed: {SCALE_IN_ALARM_DATAPOINTS} datapoints were less than the threshold "
            f"({threshold}).",
            which="-AlarmLow-",
        )
        self._scale_in(backend, name, group)

    def _scale_in(self, backend: Any, name: str, group: Any) -> None:
        before = {s.instance.id for s in group.instance_states}
        shrunk = group.desired_capacity - 1
        cause = _alarm_cause(backend, name, group.desired_capacity, shrunk, which="-AlarmLow-")
        with moto_fixes.capacity_cause(cause):
            backend.set_desired_capacity(name, shrunk)
        backend.update_attached_target_groups(name)
        for instance_id in sorted(before - {s.instance.id for s in group.instance_states}):
            termination = next(
                activity
                for activity in reversed(moto_fixes.activities_of(group))
                if activity["Description"] == f"Terminating EC2 instance: {instance_id}"
            )
            self._put_event(group, "EC2 Instance Terminate Successful", termination, instance_id)

    @staticmethod
    def _set_alarm(
        backend: Any, group_name: str, state: str, reason: str, which: str = "-AlarmHigh-"
    ) -> None:
        """SetAlarmState on the policy's AlarmHigh (or AlarmLow), when it is not in ``state`` already."""
        policy = _target_tracking_policy(backend, group_name)
        cloudwatch = cloudwatch_backends[ACCOUNT][REGION]
        for alarm in getattr(policy, "alarms", None) or []:
            current = cloudwatch.alarms.get(alarm["AlarmName"])
            if which in alarm["AlarmName"] and current is not None and current.state_value != state:
                cloudwatch.set_alarm_state(alarm["AlarmName"], reason, "{}", state)

    @staticmethod
    def policy(backend: Any, group_name: str) -> Policy | None:
        """The metric, target and resource label of the group's target-tracking policy, if it has one."""
        policy = _target_tracking_policy(backend, group_name)
        if policy is None:
            return None
        configuration = policy.target_tracking_configuration.__dict__
        predefined = configuration.get("PredefinedMetricSpecification") or {}
        return Policy(
            metric_type=predefined.get("PredefinedMetricType", CPU),
            target=float(configuration.get("TargetValue", 50.0)),
            resource_label=predefined.get("ResourceLabel", ""),
        )

    def _scale_out(self, backend: Any, name: str, group: Any, state: _Group) -> None:
        if group.desired_capacity >= group.max_size:
            return
        if self.scenario.launch_error:
            first = not state.failed_once
            state.failed_once = True
            if first:
                self._fail_launch(backend, name, group)
            if first and self.scenario.after_failure == AFTER_FAILURE_RETRY:
                state.launching = True  # the policy's capacity stands: Auto Scaling keeps trying
                self.clock.later(RETRY_FIRST_SECONDS, self._retry, backend, name, RETRY_FIRST_SECONDS)
            if self.scenario.after_failure != AFTER_FAILURE_OTHER_ZONE:
                return
        state.launching = True
        if self.scenario.launch_delay:
            # The alarm asked for the instance now; the launch stays under way for the delay.
            moto_fixes.record_activity(
                group,
                Description="Launching a new EC2 instance",
                Cause=_alarm_cause(backend, name, group.desired_capacity, group.desired_capacity + 1),
                StatusCode="InProgress",
                Progress=30,
            )
            # Not one of the clock's timers: it is not cancelled when the world stops, and
            # _launch does nothing once it has.
            threading.Timer(
                self.scenario.launch_delay / self.clock.speed, self._launch, (backend, name, state)
            ).start()
        else:
            self._launch(backend, name, state)

    def _fail_launch(self, backend: Any, name: str, group: Any) -> None:
        """A launch of the scale-out fails with the scenario's status message: a Failed scaling
        activity and its "EC2 Instance Launch Unsuccessful" event."""
        message = self.scenario.launch_error
        subnet = next(
            (s for s, zone in _subnet_zones(group).items() if zone == FAILED_ZONE),
            next(iter(_subnet_zones(group)), ""),
        )
        failed = moto_fixes.record_activity(
            group,
            Description=f"Launching a new EC2 instance.  Status Reason: {message}",
            Cause=_alarm_cause(backend, name, group.desired_capacity, group.desired_capacity + 1),
            StatusCode="Failed",
            StatusMessage=message,
            Details=moto_fixes.launch_details(subnet, FAILED_ZONE),
        )
        self._put_event(group, "EC2 Instance Launch Unsuccessful", failed)

    def _retry(self, backend: Any, name: str, backoff: float) -> None:
        group = backend.autoscaling_groups.get(name)
        if group is None or self.clock.stopped:
            return  # torn down
        self._fail_launch(backend, name, group)
        backoff = min(backoff * 2, RETRY_MAX_SECONDS)
        self.clock.later(backoff, self._retry, backend, name, backoff)

    def _launch(self, backend: Any, name: str, state: _Group) -> None:
        group = backend.autoscaling_groups.get(name)
        if group is None or self.clock.stopped:
            return  # torn down while the launch was slow
        before = {s.instance.id for s in group.instance_states}
        grown = group.desired_capacity + 1
        with moto_fixes.capacity_cause(_alarm_cause(backend, name, group.desired_capacity, grown)):
            backend.set_desired_capacity(name, grown)
        if state.failed_once and self.scenario.after_failure == AFTER_FAILURE_OTHER_ZONE:
            self._out_of_the_failed_zone(group, before)
        backend.update_attached_target_groups(name)
        self._announce_launches(group, before)
        # A new instance is InService after its boot, then warms up before the policy acts again.
        self.clock.later(INSTANCE_BOOT_SECONDS + self._warmup(), setattr, state, "launching", False)

    def _out_of_the_failed_zone(self, group: Any, before: set[str]) -> None:
        """Each new instance in the zone whose launch failed goes to another zone's subnet of the
        group, as Auto Scaling's retry in another zone puts it; its activity's Details say so."""
        others = {subnet: zone for subnet, zone in _subnet_zones(group).items() if zone != FAILED_ZONE}
        if not others:
            return
        subnet, zone = next(iter(others.items()))
        for state in group.instance_states:
            instance = state.instance
            if instance.id in before or instance.placement.zone != FAILED_ZONE:
                continue
            instance._subnet_id = subnet  # moto's SubnetId reads it
            instance.placement.zone = zone
            state.availability_zone = zone
            for activity in moto_fixes.activities_of(group):
                if activity["Description"].endswith(f": {instance.id}"):
                    activity["Details"] = moto_fixes.launch_details(subnet, zone)

    def _warmup(self) -> float:
        """The group's DefaultInstanceWarmup, as Provision set it."""
        warmup = self.health.settings.instance_warmup
        return FALLBACK_WARMUP_SECONDS if warmup is None else warmup

    def _replace(self, backend: Any, name: str, group: Any, unhealthy: str) -> None:
        """Auto Scaling takes an instance that failed its ELB health checks out of service and
        launches one in its place: a launch while the stress runs that keeps the capacity as it is."""
        now = now_iso()
        moto_fixes.record_activity(
            group,
            Description=f"Terminating EC2 instance: {unhealthy}",
            Cause=f"At {now} an instance was taken out of service in response to an ELB system health "
            "check failure.",
        )
        group.instance_states = [state for state in group.instance_states if state.instance.id != unhealthy]
        group.ec2_backend.terminate_instances([unhealthy])
        before = {state.instance.id for state in group.instance_states}
        replacement = (
            f"At {now} an instance was started in response to an unhealthy instance needing to be replaced."
        )
        with moto_fixes.capacity_cause(replacement):
            group.set_desired_capacity(group.desired_capacity)
        backend.update_attached_target_groups(name)
        self._announce_launches(group, before)

    def _announce_launches(self, group: Any, before: set[str]) -> None:
        """The launch event of each instance the group has now and did not have ``before``."""
        for instance_id in sorted({state.instance.id for state in group.instance_states} - before):
            self.health.seen(instance_id)
            launch = next(
                activity
                for activity in moto_fixes.activities_of(group)
                if activity["Description"].endswith(f": {instance_id}")
            )
            self._put_event(group, "EC2 Instance Launch Successful", launch, instance_id)

    def _put_event(
        self, group: Any, detail_type: str, activity: dict[str, Any], instance_id: str | None = None
    ) -> None:
        """The Auto Scaling event of ``activity``, with the shape of AWS's own (events/autoscaling-*.json),
        unless the scenario's EventBridge loses it."""
        if self.scenario.loses_events:
            return
        failed = activity["StatusCode"] == "Failed"
        detail = {
            "Origin": "EC2",
            "Destination": "AutoScalingGroup",
            # An event is sent while the launch is still under way; a failure once it failed.
            "StatusCode": "Failed" if failed else "InProgress",
            "AutoScalingGroupName": group.name,
            "ActivityId": activity["ActivityId"],
            "AccountId": ACCOUNT,
            "RequestId": str(uuid.uuid4()),
            "StatusMessage": activity.get("StatusMessage", ""),
            "StartTime": _iso(activity["StartTime"]),
            "EndTime": _iso(activity["EndTime"]),
            "EC2InstanceId": instance_id or "",
            "Description": activity["Description"],
            "Cause": activity["Cause"],
            # The activity's own Details (JSON text there, an object in the event).
            "Details": json.loads(activity.get("Details", "{}")),
        }
        group_arn = (
            f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:{uuid.uuid4()}"
            f":autoScalingGroupName/{group.name}"
        )
        resources = [group_arn] + (
            [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"] if instance_id else []
        )
        self.emulator.put_aws_events(
            [
                {
                    "Source": "aws.autoscaling",
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "Resources": resources,
                }
            ]
        )


def _subnet_zones(group: Any) -> dict[str, str]:
    """The group's subnets (VPCZoneIdentifier, in order) and each one's availability zone."""
    ids = [subnet for subnet in (group.vpc_zone_identifier or "").split(",") if subnet]
    if not ids:
        return {}
    zones = {
        subnet.id: subnet.availability_zone for subnet in group.ec2_backend.describe_subnets(subnet_ids=ids)
    }
    return {subnet: zones[subnet] for subnet in ids if subnet in zones}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _alarm_cause(backend: Any, group_name: str, before: int, after: int, which: str = "-AlarmHigh-") -> str:
    """Auto Scaling's Cause for a change made by the group's target-tracking alarm."""
    policy = _target_tracking_policy(backend, group_name)
    policy_name = policy.name if policy is not None else "(no policy)"
    alarm = _alarm_named(policy, which) or f"TargetTracking-{group_name}{which.rstrip('-')}"
    return (
        f"At {now_iso()} a monitor alarm {alarm} in state ALARM "
        f"triggered policy {policy_name} changing the desired capacity from {before} to {after}."
    )


def _alarm_named(policy: Any | None, which: str) -> str | None:
    """The name of the policy's AlarmHigh or AlarmLow (moto_fixes gives target tracking policies theirs)."""
    alarms = getattr(policy, "alarms", None) or []
    return next((alarm["AlarmName"] for alarm in alarms if which in alarm["AlarmName"]), None)


def _target_tracking_policy(backend: Any, group_name: str) -> Any | None:
    """The group's target-tracking scaling policy in moto, if it has one."""
    return next(
        (
            policy
            for policy in backend.policies.values()
            if policy.auto_scaling_group_name == group_name and policy.policy_type == "TargetTrackingScaling"
        ),
        None,
    )
