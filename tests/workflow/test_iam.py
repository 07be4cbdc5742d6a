"""IAM in the rehearsal has teeth, and the template grants nothing that no run needs.

Given one run of every scenario, a run whose teardown fails, and the janitor's scheduled sweep
of what that run left, all with IAM enforced, every call a function or state machine made is
recorded with the checks AWS would make for it. For each Allow statement of each role, the
statement is removed and the recorded checks are decided again on the reduced policies (the
issue allows this instead of running the scenario again): some check must then be denied, with
an AccessDenied that names its action. A statement that no check needs is unused: it fails
the test until it is removed from template.yaml. The same holds for each action of a statement
that names several, unless the layer calls it only on a path no scenario takes (UNTAKEN_PATHS).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError
from scalelab_rehearsal.emulator import ACCOUNT, REGION, Emulator
from scalelab_rehearsal.iam.checks import ApiRequest
from scalelab_rehearsal.iam.enforce import CheckedCall, Enforcement, Principal, acting_as, denial_message
from scalelab_rehearsal.iam.evaluator import Check, NamedPolicy
from scalelab_rehearsal.rehearse import collect, merged_input, start_execution, wait_for
from scalelab_rehearsal.world import DEFAULT_SPEED, SCENARIOS, World, scenario_named

from tests.support.emulated import runs_leave_their_resources, settle
from tests.workflow.conftest import IAM_LINES

EXECUTION_DEADLINE_SECONDS = 90.0
# How long one side of the scale-out meeting is held for the other (well within the run's deadline).
ORDERING_DEADLINE_SECONDS = 5.0

# Statements that serve a caller the rehearsal does not play; each says who calls them in AWS.
NOT_PLAYED = {
    "DeliverErrorLogs": "Step Functions, when it sets up the state machine's log delivery",
    "DeadLetterQueuePolicy": "Lambda's asynchronous invocation, sending a failed event to the DLQ",
    "LabStateMachineNightlyStartExecutionPolicy": (
        "EventBridge Scheduler's nightly run (ScheduleEnabled is off in the rehearsal)"
    ),
}


# Actions the layer calls only on paths that no scenario takes: (role, action) -> where and when.
UNTAKEN_PATHS = {
    ("JanitorFunctionRole", "ec2:TerminateInstances"): (
        "teardown.py, an instance left without its group (the sweep's groups take theirs with them)"
    ),
    ("OnScalingEventFunctionRole", "dynamodb:Query"): (
        "scaleout.py, an event that arrives before its waiter is registered"
    ),
    (
        "PrepareRunFunctionRole",
        "ec2:DescribeLaunchTemplates",
    ): "prepare.py, a run that names its own launch template",
    ("ProvisionLabFunctionRole", "elasticloadbalancing:DescribeTags"): (
        "provision.py, a retried Provision that finds its load balancing resources already made"
    ),
    ("StartStressFunctionRole", "dynamodb:GetItem"): "Powertools idempotency, a repeated StartStress",
    ("StartStressFunctionRole", "dynamodb:DeleteItem"): "Powertools idempotency, a StartStress that raised",
    (
        "StopStressFunctionRole",
        "ssm:CancelCommand",
    ): "stress.py, a stress command still running when it stops",
}


@dataclass(frozen=True)
class Statement:
    role: str  # the role's logical id
    role_arn: str
    policy: str
    label: str  # the Sid, or the statement's 1-based position in its policy
    actions: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.role} {self.policy}#{self.label} ({', '.join(self.actions)})"


def _run(emulator: Emulator, scenario: str, lab: str, lab_input: dict[str, Any] | None = None) -> None:
    with World(emulator, scenario_named(scenario), DEFAULT_SPEED) as world:
        arn = start_execution(
            emulator, merged_input({"lab": {"name": lab, **(lab_input or {})}}, scenario=world.run_input)
        )
        # Collecting the outcome opens the notification's link to the HTML report, as its reader
        # would: a pre-signed URL is used with PublishReport's permissions.
        collect(emulator, arn, wait_for(emulator, arn, EXECUTION_DEADLINE_SECONDS), time.monotonic())
        settle(emulator)


def _finished(emulator: Emulator, function: str) -> int:
    assert emulator.runtime is not None
    return sum(1 for invocation in emulator.runtime.invocations if invocation.function == function)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + ORDERING_DEADLINE_SECONDS
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def _run_with_the_scale_out_meeting_in_order(emulator: Emulator, event_first: bool) -> None:
    """Either side of the scale-out meeting may complete the task, whichever comes second: the
    waiter (AwaitScaleOut) or the launch event (OnScalingEvent). Which comes first is a race, so
    each order gets a run of its own: one side's invocation is held until the other has run."""
    assert emulator.stack is not None
    assert emulator.runtime is not None
    waiter = emulator.stack.resources["AwaitScaleOutFunction"]
    events = emulator.stack.resources["OnScalingEventFunction"]
    held, other = (waiter, events) if event_first else (events, waiter)
    before = _finished(emulator, other)

    def hold(function: str, _event: Any) -> None:
        if function == held:
            # The other side's next invocation after the run began: for the waiter, the
            # scale-out's launch event (the first launches were logged before the stress).
            _wait_until(lambda: _finished(emulator, other) > before)

    emulator.runtime.listeners.append(hold)
    try:
        _run(emulator, "pass", f"iam-{'event' if event_first else 'waiter'}-first")
    finally:
        emulator.runtime.listeners.remove(hold)


def _run_leaving_resources_then_sweep(emulator: Emulator) -> None:
    """Teardown fails and no cleanup follows (the rule's target is removed for this run), so the
    run's resources stay; then the janitor's schedule invokes the sweep, with its own role."""
    assert emulator.stack is not None
    assert emulator.runtime is not None
    assert emulator.iam is not None
    with runs_leave_their_resources(emulator):
        _run(emulator, "pass", "iam-leftovers")
    schedule_role = emulator.iam.principal(_role_arn(emulator, "JanitorFunctionSweepRole"), "scheduler")
    with acting_as(schedule_role):
        answer = emulator.client("lambda").invoke(
            FunctionName=emulator.stack.resources["JanitorFunction"], Payload=json.dumps({"action": "sweep"})
        )
    result = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, result
    assert result["removed"], result


REQUEST_COUNT = {"scaling": {"metric": "request_count"}}


def _run_stopped_mid_load(emulator: Emulator) -> None:
    """A request_count run stopped while its load runs: the cleanup's teardown stops the load
    (StartStress's, the load machine's, the workers' and the teardown's calls for a load)."""
    assert emulator.stack is not None
    assert emulator.runtime is not None
    worker = emulator.stack.resources["LoadWorkerFunction"]
    lab = "iam-stopped-mid-load"
    arn = f"{emulator.stack.outputs['StateMachineArn'].replace(':stateMachine:', ':execution:')}:{lab}"
    stopped: list[bool] = []

    def stop(function: str, event: Any) -> None:
        if function == worker and isinstance(event, dict) and event.get("round", 0) >= 1 and not stopped:
            stopped.append(True)
            emulator.client("stepfunctions").stop_execution(executionArn=arn, cause="a person stops it")

    emulator.runtime.listeners.append(stop)
    try:
        # A request_count load under its target: the run waits, and the load runs round after round.
        with World(emulator, scenario_named("target-too-high"), DEFAULT_SPEED) as world:
            run = merged_input({"lab": {"name": lab}}, scenario=world.run_input)
            start_execution(emulator, run, lab)
            assert wait_for(emulator, arn, EXECUTION_DEADLINE_SECONDS)["status"] == "ABORTED"
            settle(emulator)
    finally:
        emulator.runtime.listeners.remove(stop)
    assert stopped


def _role_arn(emulator: Emulator, logical_id: str) -> str:
    assert emulator.stack is not None
    return f"arn:aws:iam::{ACCOUNT}:role/{emulator.stack.resources[logical_id]}"


@dataclass
class Recording:
    emulator: Emulator
    enforcement: Enforcement
    calls: list[CheckedCall]
    role_arns: dict[str, str]  # logical id -> ARN, for every role of the stack


@pytest.fixture(scope="module")
def recording() -> Iterator[Recording]:
    with Emulator() as emulator:
        for index, scenario in enumerate(SCENARIOS):
            _run(emulator, scenario, f"iam-{index}")
        _run_with_the_scale_out_meeting_in_order(emulator, event_first=True)
        _run_with_the_scale_out_meeting_in_order(emulator, event_first=False)
        # The load generator of the network and request signals, stopped by StopStress, and by
        # the cleanup when the run is stopped mid-load.
        _run(emulator, "pass", "iam-request-count", REQUEST_COUNT)
        _run_stopped_mid_load(emulator)
        _run_leaving_resources_then_sweep(emulator)
        assert emulator.iam is not None
        assert emulator.stack is not None
        roles = {
            logical_id: _role_arn(emulator, logical_id)
            for logical_id in emulator.stack.resources
            if logical_id.endswith("Role") and logical_id != "InstanceRole"
        }
        # Read every role's policies while the account still has them.
        for arn in roles.values():
            emulator.iam.policies(arn)
        yield Recording(emulator, emulator.iam, list(emulator.iam.calls), roles)


def _statements(role: str, role_arn: str, policies: list[NamedPolicy]) -> list[Statement]:
    found = []
    for policy in policies:
        statements = policy["policy"]["Statement"]
        for position, statement in enumerate(statements if isinstance(statements, list) else [statements], 1):
            if statement["Effect"] != "Allow":
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            found.append(
                Statement(role, role_arn, policy["name"], statement.get("Sid", str(position)), tuple(actions))
            )
    return found


def _without(policies: list[NamedPolicy], statement: Statement) -> list[NamedPolicy]:
    reduced = []
    for policy in policies:
        kept = [
            s
            for position, s in enumerate(policy["policy"]["Statement"], 1)
            if policy["name"] != statement.policy or s.get("Sid", str(position)) != statement.label
        ]
        if kept:
            reduced.append({"name": policy["name"], "policy": {**policy["policy"], "Statement": kept}})
    return reduced


def _without_action(policies: list[NamedPolicy], statement: Statement, action: str) -> list[NamedPolicy]:
    reduced = []
    for policy in policies:
        kept = []
        for position, original in enumerate(policy["policy"]["Statement"], 1):
            if policy["name"] == statement.policy and original.get("Sid", str(position)) == statement.label:
                rest = [a for a in statement.actions if a != action]
                if rest:
                    kept.append({**original, "Action": rest})
                continue
            kept.append(original)
        if kept:
            reduced.append({"name": policy["name"], "policy": {**policy["policy"], "Statement": kept}})
    return reduced


# A recorded check that was allowed, with a principal that made it and the statements that allowed it.
RecordedCheck = tuple[Check, Principal, tuple[str, ...]]


def _denials(
    enforcement: Enforcement, checks: list[RecordedCheck], policies: list[NamedPolicy], removed: Statement
) -> list[str]:
    """The AccessDenied messages the recorded checks would get under ``policies``, which are the
    role's policies without (part of) ``removed``.

    Only checks that ``removed`` may have carried are decided again. Removing an Allow cannot
    deny a check that another statement allowed: the evaluator names the statements that allowed
    each check of one resource, and when it names one other than ``removed``, that one still
    allows it. A check on no resource (decided on "*", over every resource type) or with no
    statement named is always decided again."""
    removed_id = f"{removed.policy}#{removed.label}"
    return [
        denial_message(principal, check, decision)
        for check, principal, allowed_by in checks
        if check.resource is None or not allowed_by or removed_id in allowed_by
        if not (decision := enforcement.evaluator.evaluate(principal.arn, check, policies)).allowed
    ]


def _checks_by_role(calls: list[CheckedCall]) -> dict[str, list[RecordedCheck]]:
    """Each role's distinct checks that were allowed, with a principal that made them."""
    by_role: dict[str, dict[str, RecordedCheck]] = {}
    for call in calls:
        for check, decision in call.checks:
            if decision.allowed:
                key = json.dumps([check.action, check.resource, check.context], sort_keys=True)
                by_role.setdefault(call.principal.role_arn, {})[key] = (
                    check,
                    call.principal,
                    decision.allowed_by,
                )
    return {role: list(checks.values()) for role, checks in by_role.items()}


def test_every_call_was_allowed(recording: Recording) -> None:
    denied = [
        denial_message(call.principal, *call.denied) for call in recording.calls if call.denied is not None
    ]

    assert denied == []


DENIED_AS_AWS_ANSWERS = [
    ("ec2", "create_security_group", {"GroupName": "x", "Description": "x"}, "UnauthorizedOperation"),
    ("autoscaling", "delete_auto_scaling_group", {"AutoScalingGroupName": "x"}, "AccessDenied"),
    ("ssm", "get_parameter", {"Name": "/x"}, "AccessDeniedException"),
    (
        "sns",
        "publish",
        {"TopicArn": "arn:aws:sns:us-east-1:123456789012:x", "Message": "x"},
        "AuthorizationError",
    ),
    ("s3", "put_object", {"Bucket": "x", "Key": "x", "Body": b"x"}, "AccessDenied"),
    ("lambda", "invoke", {"FunctionName": "x"}, "AccessDeniedException"),
]


@pytest.mark.parametrize(("service", "operation", "arguments", "code"), DENIED_AS_AWS_ANSWERS)
def test_a_denied_call_fails_with_the_services_own_error(
    recording: Recording, service: str, operation: str, arguments: dict[str, Any], code: str
) -> None:
    emulator = recording.emulator
    assert emulator.iam is not None
    prepare = emulator.iam.principal(_role_arn(emulator, "PrepareRunFunctionRole"), "a-test")

    with acting_as(prepare), pytest.raises(ClientError) as raised:
        getattr(emulator.client(service), operation)(**arguments)

    assert raised.value.response["Error"]["Code"] == code
    assert f"{prepare.arn} is not authorized to perform" in raised.value.response["Error"]["Message"]


def test_each_side_of_the_scale_out_meeting_completed_a_task(recording: Recording) -> None:
    completers = {
        call.principal.role_logical_id
        for call in recording.calls
        if any(check.action == "states:SendTaskSuccess" for check, _decision in call.checks)
    }

    assert completers == {"AwaitScaleOutFunctionRole", "OnScalingEventFunctionRole"}


def test_notify_publishes_to_the_encrypted_topic_with_the_topic_keys_permissions(
    recording: Recording,
) -> None:
    """SNS encrypts with the topic's customer managed key using the publisher's permissions."""
    emulator = recording.emulator
    assert emulator.stack is not None
    key_arn = emulator.client("kms").describe_key(KeyId=emulator.stack.resources["ReportsTopicKey"])[
        "KeyMetadata"
    ]["Arn"]
    publishes = [call for call in recording.calls if call.api == "sns:Publish"]

    assert publishes
    for call in publishes:
        assert call.principal.role_logical_id == "LabStateMachineRole"
        kms = {(check.action, check.resource, decision.result) for check, decision in call.checks[1:]}
        assert kms == {("kms:GenerateDataKey", key_arn, "Allowed"), ("kms:Decrypt", key_arn, "Allowed")}


def test_every_eventbridge_delivery_to_a_function_was_allowed(recording: Recording) -> None:
    decisions = [decision.result for _check, decision in recording.enforcement.deliveries]

    assert decisions
    assert set(decisions) == {"Allowed"}


def test_provisions_describe_policies_is_denied_by_its_role(recording: Recording) -> None:
    """Issue 9's finding: ProvisionLab calls DescribePolicies, which its role does not allow.
    Checked on the role itself, so the test holds before and after the layer stops calling it."""
    emulator = recording.emulator
    assert emulator.iam is not None
    provision = emulator.iam.principal(_role_arn(emulator, "ProvisionLabFunctionRole"), "a-test")
    request = ApiRequest("autoscaling", "DescribePolicies", {"AutoScalingGroupName": "x"}, ACCOUNT, REGION)

    call = emulator.iam.check(provision, request)

    assert call.denied is not None
    assert call.denied[0].action == "autoscaling:DescribePolicies"


def _shared(recording: Recording) -> dict[tuple[str, str], list[Statement]]:
    """Each statement, with every role that has it: a managed policy attached to several roles
    is needed when any of them needs it."""
    statements: dict[tuple[str, str], list[Statement]] = {}
    for role, role_arn in sorted(recording.role_arns.items()):
        for statement in _statements(role, role_arn, recording.enforcement.policies(role_arn)):
            statements.setdefault((statement.policy, statement.label), []).append(statement)
    return statements


def test_every_statement_is_needed(recording: Recording) -> None:
    enforcement = recording.enforcement
    checks = _checks_by_role(recording.calls)

    def denials_without(statement: Statement, action: str | None = None) -> list[str]:
        policies = enforcement.policies(statement.role_arn)
        reduced = (
            _without(policies, statement) if action is None else _without_action(policies, statement, action)
        )
        return _denials(enforcement, checks.get(statement.role_arn, []), reduced, statement)

    needed: list[str] = []
    unused: list[str] = []
    not_played: list[str] = []
    for (policy, label), sharing in _shared(recording).items():
        name = " / ".join(statement.name for statement in sharing)
        if policy in NOT_PLAYED or label in NOT_PLAYED:
            not_played.append(name)
            continue
        denied = [message for statement in sharing for message in denials_without(statement)]
        untaken = all(
            any((statement.role, action) in UNTAKEN_PATHS for statement in sharing)
            for action in sharing[0].actions
        )
        if not denied and not untaken:
            unused.append(name)
            continue
        if not denied:
            continue  # every action of it is called only on a path no scenario takes
        # The run would fail with an AccessDenied that names one of the statement's actions.
        actions = sharing[0].actions
        assert any(action in message for message in denied for action in actions), (name, denied)
        needed.append(name)
        # Least privilege within the statement too: each of its actions is needed.
        unused += [
            f"{name}: {action}"
            for action in actions
            if len(actions) > 1
            and not any((statement.role, action) in UNTAKEN_PATHS for statement in sharing)
            and not any(denials_without(statement, action) for statement in sharing)
        ]

    assert unused == [], "unused statements and actions (remove them from template.yaml):\n" + "\n".join(
        unused
    )
    IAM_LINES.append(
        f"iam: {len(recording.calls)} calls checked across {len(checks)} roles, "
        f"{len(needed)} statements, every statement needed"
        f" ({len(not_played)} statements serve callers the rehearsal does not play:"
        f" {', '.join(sorted(NOT_PLAYED))})"
    )
