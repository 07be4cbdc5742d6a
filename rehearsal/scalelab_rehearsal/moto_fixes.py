"""Run Command, task tokens, stops, PutEvents, scaling policies and activities as AWS does them, where
moto 5.2.5 differs (used by the rehearsal and the tests).

- ``SendCommand`` with ``InstanceIds`` and no ``Targets`` sends to every
  instance in the region, because an empty Targets filter matches them all.
- There is no ``CancelCommand``.
- ``SendTaskFailure`` drops its ``cause``.
- A ``waitForTaskToken`` task with ``TimeoutSecondsPath`` waits for its token
  with a timeout read from the wrong value on the interpreter's stack (the
  Lambda's result), so a token that arrives after the wait began fails the
  state with ``States.Runtime``.
- ``StopExecution`` does not end a ``waitForTaskToken`` wait: the execution
  stays RUNNING until the state's deadline and then fails ``States.Timeout``,
  never ABORTED. On AWS a stop ends the wait, and the execution, at once.
- A stop that lands while a state is being evaluated (a Choice state, say)
  can end the execution FAILED ``States.Runtime`` instead of ABORTED: the
  interpreter skips the rest of the state's work once stopped, the state
  then misses its result, and that error replaces the stop.
- ``PutEvents`` accepts any source from a caller. AWS refuses an entry whose
  source starts with ``aws.`` (``NotAuthorizedForSourceException``): only AWS's
  own services put those. The rehearsal's world, which plays Auto Scaling,
  puts its events on the bus directly (``Emulator.put_aws_events``).
- ``PutScalingPolicy`` answers without ``PolicyARN`` (moto names it
  ``PolicyArn``, which is not in the API, so SDKs drop it).
- Scaling policies are kept by name alone: a second group's policy of the same
  name replaces the first group's, ``DeletePolicy`` and ``ExecutePolicy`` ignore
  the group, and deleting a group leaves its policies. AWS keeps policies per
  group and deletes them with it.
- ``DescribeScalingActivities`` always answers an empty list. AWS records an
  activity for every instance a group launches or terminates, with a Cause
  that says why the capacity changed; here every capacity change records
  them, with the Cause whoever plays AWS gives (``capacity_cause``), and a
  launch's ``Details`` (its subnet and zone, as JSON text, as AWS gives them).
- CloudFormation's ``AWS::IAM::Role`` ignores ``ManagedPolicyArns``: the
  template's own managed policies are never attached to its roles.
- CloudFormation's ``AWS::KMS::Key`` keeps ``KeyPolicy`` as the template's object, where KMS
  keeps a JSON document: every KMS call on the key (``DescribeKey``, ``GetKeyPolicy``) then fails
  with an internal error.
- ``EnableMetricsCollection`` without ``Metrics`` enables none; AWS enables
  every group metric.
- The default VPC has no internet gateway, so its main route table has no route
  to the internet. AWS attaches one and routes ``0.0.0.0/0`` to it.
- ``CreateLoadBalancer`` accepts two subnets in one availability zone. AWS
  refuses them (``InvalidConfigurationRequest``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, FakeScalingPolicy
from moto.autoscaling.responses import AutoScalingResponse
from moto.cloudwatch.models import Alarm, cloudwatch_backends
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.core.types import Base64EncodedString
from moto.ec2.models.vpcs import VPC, VPCBackend
from moto.ec2.responses.general import SAMPLE_CONSOLE_OUTPUT, General
from moto.elbv2.exceptions import InvalidConfigurationRequest
from moto.elbv2.models import ELBv2Backend, FakeLoadBalancer
from moto.events.responses import EventsHandler
from moto.iam.models import Role, iam_backends
from moto.kms.models import Key
from moto.ssm.models import Command
from moto.ssm.responses import SimpleSystemManagerResponse
from moto.stepfunctions.parser.api import ExecutionFailedEventDetails
from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_callback as callback_tasks,
)
from moto.stepfunctions.parser.asl.eval.callback.callback import (
    CallbackEndpoint,
    CallbackOutcome,
    CallbackOutcomeTimedOut,
    HeartbeatEndpoint,
)
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
from moto.stepfunctions.responses import StepFunctionResponse
from moto.utilities.utils import get_partition

RUNNING = frozenset({"Pending", "InProgress"})
# PutEvents' limit of entries per request, which moto checks for the whole request.
MAX_ENTRIES = 10
# The source prefix AWS keeps for its own services' events.
AWS_SOURCE_PREFIX = "aws."
NOT_AUTHORIZED_FOR_SOURCE = {
    "ErrorCode": "NotAuthorizedForSourceException",
    "ErrorMessage": "Not authorized for the source.",
}
_instances_from_targets_as_moto_reads_them = Command._get_instance_ids_from_targets


def cancel_command(self: SimpleSystemManagerResponse) -> ActionResult:
    """CancelCommand as AWS answers it: unknown id -> InvalidCommandId; a finished command stays as it is."""
    command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
    if command.status in RUNNING:
        command.status = command.status_details = "Cancelled"
        for invocation in command.invocations:
            invocation["Status"] = invocation["StatusDetails"] = "Cancelled"
    return EmptyResult()


def instances_from_targets(self: Command) -> list[str]:
    """Targets add instances only when there are targets."""
    result: list[str] = _instances_from_targets_as_moto_reads_them(self) if self.targets else []
    return result


def send_task_failure(self: StepFunctionResponse) -> ActionResult:
    """SendTaskFailure with its cause, which the waiting task's Catch sees as ``Cause``."""
    # The interpreter's backend (execute_state_machine on) takes a cause; the plain one does not.
    backend: Any = self.stepfunction_backend
    backend.send_task_failure(
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


_put_events_as_moto_does = EventsHandler.put_events


def put_events(self: EventsHandler) -> str:
    """PutEvents as AWS answers a caller: an entry with an ``aws.`` source fails with
    NotAuthorizedForSourceException and counts in FailedEntryCount; the others are put."""
    entries: list[dict[str, Any]] = self._get_param("Entries") or []
    if len(entries) > MAX_ENTRIES:  # moto's own validation error, for the whole request
        return _put_events_as_moto_does(self)
    refused = [str(entry.get("Source", "")).startswith(AWS_SOURCE_PREFIX) for entry in entries]
    put = iter(self.events_backend.put_events([e for e, no in zip(entries, refused, strict=True) if not no]))
    answers = [dict(NOT_AUTHORIZED_FOR_SOURCE) if no else next(put) for no in refused]
    return json.dumps(
        {"FailedEntryCount": sum(1 for answer in answers if "ErrorCode" in answer), "Entries": answers}
    )


_put_policy_as_moto_does = AutoScalingBackend.put_scaling_policy
_delete_group_as_moto_does = AutoScalingBackend.delete_auto_scaling_group
_put_policy_answer_as_moto_does = AutoScalingResponse.put_scaling_policy


def put_scaling_policy(self: AutoScalingBackend, **arguments: Any) -> FakeScalingPolicy:
    """Keep the policy under its ARN, which names its group and itself: one per group and name; a
    target-tracking policy gets its two alarms, as AWS creates them."""
    policy = _put_policy_as_moto_does(self, **arguments)
    del self.policies[arguments["name"]]  # where moto put it
    existing = self.policies.get(policy.arn)
    self.policies[policy.arn] = policy
    if policy.policy_type == "TargetTrackingScaling":
        # Read by moto's DescribePolicies answer (the API's ScalingPolicy.Alarms).
        policy.__dict__["alarms"] = getattr(existing, "alarms", None) or _target_tracking_alarms(self, policy)
    return policy


# The metric each predefined type's alarms watch: namespace, name, statistic. The three group
# metrics by AutoScalingGroupName, RequestCountPerTarget by TargetGroup (its only valid statistic
# is Sum, which for it is the average per target: ELB's "CloudWatch metrics for your Application
# Load Balancer").
_ALARM_METRICS = {
    "ASGAverageCPUUtilization": ("AWS/EC2", "CPUUtilization", "Average"),
    "ASGAverageNetworkIn": ("AWS/EC2", "NetworkIn", "Average"),
    "ASGAverageNetworkOut": ("AWS/EC2", "NetworkOut", "Average"),
    "ALBRequestCountPerTarget": ("AWS/ApplicationELB", "RequestCountPerTarget", "Sum"),
}


def _target_tracking_alarms(backend: AutoScalingBackend, policy: FakeScalingPolicy) -> list[dict[str, str]]:
    """AlarmHigh (3 of 3 one-minute datapoints above the target) and AlarmLow (15 of 15 below 90 % of
    it), as target tracking makes them for the policy's predefined metric."""
    cloudwatch = cloudwatch_backends[backend.account_id][backend.region_name]
    configuration = policy.target_tracking_configuration.__dict__
    target = float(configuration.get("TargetValue", 50.0))
    group = policy.auto_scaling_group_name
    predefined = configuration.get("PredefinedMetricSpecification") or {}
    metric_type = predefined.get("PredefinedMetricType", "ASGAverageCPUUtilization")
    namespace, metric_name, statistic = _ALARM_METRICS.get(
        metric_type, _ALARM_METRICS["ASGAverageCPUUtilization"]
    )
    dimensions = [{"Name": "AutoScalingGroupName", "Value": group}]
    if metric_type == "ALBRequestCountPerTarget":
        # The label is app/<lb>/<id>/targetgroup/<tg>/<id>: the dimension is its target group part.
        label = str(predefined.get("ResourceLabel", ""))
        dimensions = [{"Name": "TargetGroup", "Value": "targetgroup/" + label.partition("/targetgroup/")[2]}]
    alarms = []
    for kind, operator, periods, threshold in (
        ("AlarmHigh", "GreaterThanThreshold", 3, target),
        ("AlarmLow", "LessThanThreshold", 15, target * 0.9),
    ):
        name = f"TargetTracking-{group}-{kind}-{uuid.uuid4()}"
        alarm = cloudwatch.put_metric_alarm(
            name=name,
            namespace=namespace,
            metric_name=metric_name,
            comparison_operator=operator,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            period=60,
            threshold=threshold,
            statistic=statistic,
            description=f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {policy.arn}.",
            dimensions=dimensions,
            alarm_actions=[policy.arn],
        )
        alarm.state_value = "INSUFFICIENT_DATA"
        alarms.append({"AlarmName": name, "AlarmARN": alarm.alarm_arn})
    return alarms


def _delete_alarms_of(backend: AutoScalingBackend, policy: FakeScalingPolicy) -> None:
    names = [alarm["AlarmName"] for alarm in getattr(policy, "alarms", None) or []]
    cloudwatch_backends[backend.account_id][backend.region_name].delete_alarms(names)


def delete_auto_scaling_group(self: AutoScalingBackend, group_name: str) -> None:
    """Deleting a group deletes its policies, and their alarms."""
    _delete_group_as_moto_does(self, group_name)
    for arn in [arn for arn, policy in self.policies.items() if policy.auto_scaling_group_name == group_name]:
        _delete_alarms_of(self, self.policies.pop(arn))


def put_scaling_policy_answer(self: AutoScalingResponse) -> ActionResult:
    """PutScalingPolicy's answer, with the policy's ARN where the API has it."""
    answer: Any = _put_policy_answer_as_moto_does(self).result
    return ActionResult({"PolicyARN": answer["PolicyArn"]})


def _policy_key(self: AutoScalingResponse) -> str:
    """The policy a DeletePolicy or ExecutePolicy names: by its ARN, or by its name in its group."""
    name: str = self._get_param("PolicyName")
    group = self._get_param("AutoScalingGroupName")
    for arn, policy in self.autoscaling_backend.policies.items():
        if name == arn or (name == policy.name and policy.auto_scaling_group_name == group):
            return arn
    return name


def delete_policy(self: AutoScalingResponse) -> ActionResult:
    policy = self.autoscaling_backend.policies.get(_policy_key(self))
    self.autoscaling_backend.delete_policy(_policy_key(self))
    if policy is not None:
        _delete_alarms_of(self.autoscaling_backend, policy)
    return EmptyResult()


def execute_policy(self: AutoScalingResponse) -> ActionResult:
    self.autoscaling_backend.execute_policy(_policy_key(self))
    return EmptyResult()


# How often a task token wait looks whether its execution was stopped.
STOP_POLL_SECONDS = 0.02
_wait_for_token_as_moto_does = callback_tasks.StateTaskServiceCallback._eval_wait_for_task_token
_evaluate_state_as_moto_does = ExecutionState._evaluate_with_timeout


def wait_for_task_token(
    self: callback_tasks.StateTaskServiceCallback,
    env: Environment,
    timeout_seconds: Any,
    callback_endpoint: CallbackEndpoint,
    heartbeat_endpoint: HeartbeatEndpoint | None,
) -> CallbackOutcome:
    """Wait for the token until it arrives or the execution stops running (stopped, or the state's
    deadline passed). The state's own timeout (TimeoutSecondsPath, evaluated correctly when the
    state starts) ends the wait at its deadline; ``timeout_seconds`` here is not that value."""
    if heartbeat_endpoint is not None:  # moto's heartbeat wait already ends when the execution stops
        return _wait_for_token_as_moto_does(self, env, timeout_seconds, callback_endpoint, heartbeat_endpoint)
    outcome = callback_endpoint.wait(timeout=STOP_POLL_SECONDS)
    while outcome is None and env.is_running():
        outcome = callback_endpoint.wait(timeout=STOP_POLL_SECONDS)
    return (
        outcome if outcome is not None else CallbackOutcomeTimedOut(callback_id=callback_endpoint.callback_id)
    )


def evaluate_state(self: ExecutionState, env: Environment) -> None:
    """A state's work, whose failure after a stop is no failure: AWS ends a stopped execution
    ABORTED at once, without the state's error, its Retry or its Catch."""
    try:
        _evaluate_state_as_moto_does(self, env)
    except Exception:
        if env.is_running():
            raise


_set_error_as_moto_does = Environment.set_error


def set_error(self: Environment, error: ExecutionFailedEventDetails) -> None:
    """A stopped execution stays stopped (ABORTED): an error raised by the work the stop cut short
    is not how it ended."""
    with self._state_mutex:  # the same lock set_stop holds, so a stop and an error cannot interleave
        if not isinstance(self.program_state(), ProgramStopped):
            _set_error_as_moto_does(self, error)


# ---- scaling activities: moto keeps none, AWS keeps one per launch and termination ----------

# Why the group's capacity is changing, in Auto Scaling's own words, for the activities the change
# makes. Whoever plays AWS sets it (the world, for its alarm); moto's own changes say "a user request".
_capacity_cause: ContextVar[str | None] = ContextVar("capacity_cause", default=None)
_set_capacity_as_moto_does = FakeAutoScalingGroup.set_desired_capacity


@contextmanager
def capacity_cause(cause: str) -> Iterator[None]:
    """Capacity changes inside this block record ``cause`` as their activities' Cause."""
    token = _capacity_cause.set(cause)
    try:
        yield
    finally:
        _capacity_cause.reset(token)


def activities_of(group: FakeAutoScalingGroup) -> list[dict[str, Any]]:
    """The group's scaling activities, oldest first (record more with ``record_activity``)."""
    activities: list[dict[str, Any]] = group.__dict__.setdefault("scaling_activities", [])
    return activities


def record_activity(group: FakeAutoScalingGroup, **fields: Any) -> dict[str, Any]:
    """One scaling activity of ``group``, with AWS's fields; returns it (its ActivityId is new)."""
    now = datetime.now(UTC)
    activity = {
        "ActivityId": str(uuid.uuid4()),
        "AutoScalingGroupName": group.name,
        "StartTime": now,
        "EndTime": now,
        "StatusCode": "Successful",
        "Progress": 100,
        **fields,
    }
    if activity["StatusCode"] not in ("Successful", "Failed", "Cancelled"):
        del activity["EndTime"]  # still under way: it has not ended
    activities_of(group).append(activity)
    return activity


def launch_details(subnet_id: str | None, zone: str | None) -> str:
    """A launch activity's ``Details``: JSON text naming the subnet and the availability zone."""
    return json.dumps({"Subnet ID": subnet_id or "", "Availability Zone": zone or ""})


def set_desired_capacity(self: FakeAutoScalingGroup, new_capacity: int | None) -> None:
    """Change the capacity as moto does, and record an activity per instance launched or terminated."""
    # A group being created has neither yet: its capacity grows from 0.
    created = not hasattr(self, "desired_capacity")
    before = 0 if created else self.desired_capacity or 0
    running = {state.instance.id for state in getattr(self, "instance_states", [])}
    _set_capacity_as_moto_does(self, new_capacity)
    after = self.desired_capacity or 0
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = "created an AutoScalingGroup" if created else "explicitly set group desired capacity"
    cause = (
        _capacity_cause.get()
        or f"At {now} a user request {request} changing the desired capacity from {before} to {after}."
    )
    current = {state.instance.id for state in self.instance_states}
    # A launch to reach a new capacity says so; one that keeps it (a replacement) only says why.
    started = (
        f"  At {now} an instance was started in response to a difference between desired and actual "
        f"capacity, increasing the capacity from {before} to {after}."
        if after > before
        else ""
    )
    launched = {state.instance.id: state.instance for state in self.instance_states}
    for instance_id in sorted(current - running):
        record_activity(
            self,
            Description=f"Launching a new EC2 instance: {instance_id}",
            Cause=cause + started,
            Details=launch_details(launched[instance_id].subnet_id, launched[instance_id].placement.zone),
        )
    for instance_id in sorted(running - current):
        record_activity(
            self,
            Description=f"Terminating EC2 instance: {instance_id}",
            Cause=f"{cause}  At {now} an instance was taken out of service in response to a difference "
            f"between desired and actual capacity, shrinking the capacity from {before} to {after}.",
        )


def describe_scaling_activities(self: AutoScalingResponse) -> ActionResult:
    """The group's activities, newest first, as AWS lists them (moto answers an empty list)."""
    name = self._get_param("AutoScalingGroupName")
    wanted = set(self._get_param("ActivityIds", []))
    groups = [
        group
        for group in self.autoscaling_backend.autoscaling_groups.values()
        if name is None or group.name == name
    ]
    activities = [
        activity
        for group in groups
        for activity in reversed(activities_of(group))
        if not wanted or activity["ActivityId"] in wanted
    ]
    return ActionResult({"Activities": activities})


# ---- alarm history and console output --------------------------------------------------------------

_update_alarm_state_as_moto_does = Alarm.update_state
# DescribeAlarmHistory's MaxRecords when the request gives none, and its largest.
ALARM_HISTORY_RECORDS = 100


def alarm_history(alarm: Alarm) -> list[dict[str, Any]]:
    """The alarm's state changes, oldest first, as DescribeAlarmHistory items."""
    history: list[dict[str, Any]] = alarm.__dict__.setdefault("scalelab_history", [])
    return history


def update_alarm_state(self: Alarm, reason: str, reason_data: str, state_value: str) -> None:
    """Change the state as moto does, and keep the change as AWS's history item."""
    old = self.state_value
    _update_alarm_state_as_moto_does(self, reason, reason_data, state_value)
    if old != state_value:
        alarm_history(self).append(
            {
                "AlarmName": self.name,
                "AlarmType": "MetricAlarm",
                "Timestamp": self.state_updated_timestamp,
                "HistoryItemType": "StateUpdate",
                "HistorySummary": f"Alarm updated from {old} to {state_value}",
                "HistoryData": json.dumps(
                    {
                        "version": "1.0",
                        "oldState": {"stateValue": old},
                        "newState": {"stateValue": state_value, "stateReason": reason},
                    }
                ),
            }
        )


def describe_alarm_history(self: CloudWatchResponse) -> ActionResult:
    """One alarm's (or every alarm's) history, filtered by type, newest first unless asked otherwise."""
    name = self._get_param("AlarmName")
    kind = self._get_param("HistoryItemType")
    limit = min(int(self._get_param("MaxRecords") or ALARM_HISTORY_RECORDS), ALARM_HISTORY_RECORDS)
    alarms = [
        alarm for alarm in self.cloudwatch_backend.alarms.values() if name is None or alarm.name == name
    ]
    items = sorted(
        (
            item
            for alarm in alarms
            for item in alarm_history(alarm)
            if kind is None or item["HistoryItemType"] == kind
        ),
        key=lambda item: item["Timestamp"],
        reverse=self._get_param("ScanBy") != "TimestampAscending",
    )
    return ActionResult({"AlarmHistoryItems": items[:limit]})


def get_console_output(self: General) -> ActionResult:
    """The instance's console (``console_output``, which the world writes), base64-encoded as in AWS
    (botocore decodes it for the caller)."""
    instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
    console = str(instance.__dict__.get("console_output", SAMPLE_CONSOLE_OUTPUT))
    return ActionResult(
        {
            "InstanceId": instance.id,
            "Timestamp": datetime.now(UTC),
            "Output": Base64EncodedString.from_raw_string(console),
        }
    )


# ---- roles from a template: moto drops their managed policies ----------------------------------

_create_role_as_moto_does = Role.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]


def create_role_from_template(
    cls: type[Role],
    resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
    **kwargs: Any,
) -> Role:
    """An AWS::IAM::Role as moto makes it, with its ManagedPolicyArns attached as CloudFormation does.

    Only policies the account holds can be attached: the template's own managed policies. AWS's
    managed policies are not in an emulated account, so what they grant is never allowed here.
    """
    role: Role = _create_role_as_moto_does(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    )
    backend = iam_backends[account_id][get_partition(region_name)]
    for arn in cloudformation_json["Properties"].get("ManagedPolicyArns", []):
        if arn in backend.managed_policies:
            backend.attach_role_policy(arn, role.name)
    return role


_create_key_as_moto_does = Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]


def create_key_from_template(
    cls: type[Key],
    resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
    **kwargs: Any,
) -> Key:
    """An AWS::KMS::Key whose policy is kept as the JSON document KMS answers with."""
    properties = cloudformation_json["Properties"]
    if not isinstance(properties.get("KeyPolicy"), str):
        cloudformation_json = {
            **cloudformation_json,
            "Properties": {**properties, "KeyPolicy": json.dumps(properties.get("KeyPolicy", {}))},
        }
    key: Key = _create_key_as_moto_does(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    )
    return key


# Every group metric Auto Scaling collects (Amazon EC2 Auto Scaling User Guide, "Auto Scaling
# group metrics"): what EnableMetricsCollection enables when it names none.
GROUP_METRICS = (
    "GroupMinSize",
    "GroupMaxSize",
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupStandbyInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
)


def enable_metrics_collection(self: FakeAutoScalingGroup, metrics: list[str]) -> None:
    self.metrics = list(metrics) if metrics else list(GROUP_METRICS)


# ---- the default VPC, and a load balancer's subnets ---------------------------------------------

_create_default_vpc_as_moto_does = VPCBackend.create_default_vpc
_create_load_balancer_as_moto_does = ELBv2Backend.create_load_balancer
SAME_ZONE_SUBNETS = "A load balancer cannot be attached to multiple subnets in the same Availability Zone"


def create_default_vpc(self: Any) -> VPC:
    """The default VPC as AWS makes it: with an internet gateway, and its main route table's
    0.0.0.0/0 route to it (Amazon VPC User Guide, "Default VPCs")."""
    vpc = _create_default_vpc_as_moto_does(self)
    gateway = self.create_internet_gateway()
    self.attach_internet_gateway(gateway.id, vpc.id)
    main = next(table for table in self.route_tables.values() if table.vpc_id == vpc.id)
    self.create_route(main.id, "0.0.0.0/0", gateway_id=gateway.id)
    return vpc


def create_load_balancer(
    self: ELBv2Backend,
    name: str,
    security_groups: list[str],
    subnet_ids: list[str],
    subnet_mappings: list[dict[str, str]] | None = None,
    **rest: Any,
) -> FakeLoadBalancer:
    """AWS refuses a load balancer with two subnets in one availability zone."""
    chosen = list(subnet_ids or []) + [mapping["SubnetId"] for mapping in subnet_mappings or []]
    # moto names a subnet it does not know itself, after this check.
    known = [subnet for subnet in self.ec2_backend.describe_subnets() if subnet.id in chosen]
    zones = [subnet.availability_zone for subnet in known]
    if len(zones) != len(set(zones)):
        raise InvalidConfigurationRequest(SAME_ZONE_SUBNETS)
    return _create_load_balancer_as_moto_does(
        self, name, security_groups, subnet_ids, subnet_mappings, **rest
    )


def _patches() -> list[tuple[type, str, Any]]:
    """Each fix as (moto's class, attribute, what replaces it)."""
    return [
        (FakeAutoScalingGroup, "set_desired_capacity", set_desired_capacity),
        (FakeAutoScalingGroup, "enable_metrics_collection", enable_metrics_collection),
        (Role, "create_from_cloudformation_json", classmethod(create_role_from_template)),  # type: ignore[arg-type]
        (Key, "create_from_cloudformation_json", classmethod(create_key_from_template)),  # type: ignore[arg-type]
        (AutoScalingResponse, "describe_scaling_activities", describe_scaling_activities),
        (SimpleSystemManagerResponse, "cancel_command", cancel_command),
        (Command, "_get_instance_ids_from_targets", instances_from_targets),
        (StepFunctionResponse, "send_task_failure", send_task_failure),
        (callback_tasks.StateTaskServiceCallback, "_eval_wait_for_task_token", wait_for_task_token),
        (ExecutionState, "_evaluate_with_timeout", evaluate_state),
        (Environment, "set_error", set_error),
        (EventsHandler, "put_events", put_events),
        (AutoScalingBackend, "put_scaling_policy", put_scaling_policy),
        (AutoScalingBackend, "delete_auto_scaling_group", delete_auto_scaling_group),
        (AutoScalingResponse, "put_scaling_policy", put_scaling_policy_answer),
        (AutoScalingResponse, "delete_policy", delete_policy),
        (AutoScalingResponse, "execute_policy", execute_policy),
        (VPCBackend, "create_default_vpc", create_default_vpc),
        (ELBv2Backend, "create_load_balancer", create_load_balancer),
        (Alarm, "update_state", update_alarm_state),
        (CloudWatchResponse, "describe_alarm_history", describe_alarm_history),
        (General, "get_console_output", get_console_output),
    ]


def install() -> Callable[[], None]:
    """Apply the fixes; returns the undo, which puts back exactly what each class held (an
    attribute the class only inherited, or moto lacks, is removed again)."""
    patches = _patches()
    # The class's own attribute, as stored (a classmethod stays one), or None when it has none.
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)

    def undo() -> None:
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    return undo
