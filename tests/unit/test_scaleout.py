"""AwaitScaleOut and OnScalingEvent: a token and Auto Scaling's events meet once, in either order.

The waiting task is a real state machine in the emulated account (moto's
Step Functions interpreter). moto cannot run a Lambda function without
Docker, so the task is ``sqs:sendMessage.waitForTaskToken`` with the same
Payload as the real ``lambda:invoke.waitForTaskToken`` task: the test reads
that Payload from the queue and hands it to ``await_scale_out``, as Lambda
would. Token completion is then judged on the execution itself: SUCCEEDED
with the scale-out output, or FAILED with ScaleOutFailed.

The Auto Scaling events are AWS's documented examples (``events/``), given
this run's group, a fresh event id and launch times around the stress start.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError
from moto.autoscaling.models import autoscaling_backends
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT_ID
from moto.core.config import default_user_config
from scalelab_rehearsal import moto_fixes

from scalelab.contracts.base import parse_event
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.scaleout import (
    AwaitScaleOutEvent,
    AwaitScaleOutResult,
    CheckScaleOutEvent,
    IgnoredScalingEvent,
    ScalingEventResult,
)
from scalelab.core import aws
from scalelab.core.errors import InvalidInput, NoScaleOut, ScaleOutFailed, ScaleOutTooSlow
from scalelab.core.settings import TableSettings
from scalelab.steps.scaleout import await_scale_out, check_scale_out, on_scaling_event
from scalelab.store.runs import RunTable
from scalelab.store.scaleout import ScaleOutTable
from tests.conftest import REGION, TABLE_NAME, FakeLambdaContext
from tests.support.account import aws_fault
from tests.support.template import ROOT

RUN = "scale-0001"
STRESS_STARTED = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
DEADLINE_SECONDS = 5.0
# The group when the stress began: two instances, desired capacity 2.
INSTANCES_BEFORE = ("i-0a1b2c3d4e5f60010", "i-0a1b2c3d4e5f60011")
EVENTS = ROOT / "events"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def aws_event(
    name: str, launched: datetime | None = STRESS_STARTED + timedelta(minutes=4), run_id: str = RUN
) -> dict[str, Any]:
    """``events/autoscaling-<name>.json`` for ``run_id``'s group: a fresh id, the activity at ``launched``."""
    event: dict[str, Any] = json.loads((EVENTS / f"autoscaling-{name}.json").read_text())
    event["id"] = str(uuid.uuid4())
    event["detail"]["AutoScalingGroupName"] = f"scalelab-{run_id}"
    if launched is not None:
        event["detail"]["StartTime"] = iso(launched)
        event["detail"]["EndTime"] = iso(launched + timedelta(seconds=30))
        event["time"] = iso(launched + timedelta(seconds=30))
    return event


def deliver(event: Any, table: ScaleOutTable) -> ScalingEventResult | IgnoredScalingEvent:
    """What OnScalingEvent's handler does with what EventBridge sends it."""
    return on_scaling_event(parse_event(event, EventBridgeModel, "EventBridge event"), table)


def wait(payload: dict[str, Any], table: ScaleOutTable) -> AwaitScaleOutResult:
    """What AwaitScaleOut's handler does with the task's Payload."""
    return await_scale_out(parse_event(payload, AwaitScaleOutEvent, "AwaitScaleOut event"), table)


@dataclass(frozen=True)
class Execution:
    arn: str
    payload: dict[str, Any]


class Workflow:
    """A one-state machine whose task waits for its token with AwaitScaleOut's Payload."""

    def __init__(self) -> None:
        self.states = boto3.client("stepfunctions")
        self.sqs = boto3.client("sqs")
        self.queue = self.sqs.create_queue(QueueName="scalelab-test-task-tokens")["QueueUrl"]
        role = boto3.client("iam").create_role(
            RoleName="scalelab-test-workflow", AssumeRolePolicyDocument="{}"
        )
        definition = {
            "StartAt": "AwaitScaleOut",
            "States": {
                "AwaitScaleOut": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {
                        "QueueUrl": self.queue,
                        "MessageBody": {
                            "run_id.$": "$.run_id",
                            "auto_scaling_group_name.$": "$.auto_scaling_group_name",
                            "task_token.$": "$$.Task.Token",
                            "stress_started_at.$": "$.stress_started_at",
                            "instances_before.$": "$.instances_before",
                            "desired_capacity.$": "$.desired_capacity",
                        },
                    },
                    "TimeoutSecondsPath": "$.scale_out_within_seconds",
                    "End": True,
                }
            },
        }
        self.machine = self.states.create_state_machine(
            name="scalelab-test-await", definition=json.dumps(definition), roleArn=role["Role"]["Arn"]
        )["stateMachineArn"]
        self.started: list[str] = []

    def start(self, run_id: str = RUN, within_seconds: int = 60) -> Execution:
        arn = self.states.start_execution(
            stateMachineArn=self.machine,
            name=f"run-{uuid.uuid4().hex[:12]}",
            input=json.dumps(
                {
                    "run_id": run_id,
                    "auto_scaling_group_name": f"scalelab-{run_id}",
                    "stress_started_at": STRESS_STARTED.isoformat(),
                    "instances_before": list(INSTANCES_BEFORE),
                    "desired_capacity": 2,
                    "scale_out_within_seconds": within_seconds,
                }
            ),
        )["executionArn"]
        self.started.append(arn)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            for message in self.sqs.receive_message(QueueUrl=self.queue).get("Messages", []):
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
                return Execution(arn=arn, payload=json.loads(message["Body"]))
            time.sleep(0.02)
        raise AssertionError(f"the task of {arn} never handed out its token")

    def status(self, arn: str) -> str:
        status: str = self.states.describe_execution(executionArn=arn)["status"]
        return status

    def finished(self, arn: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            described: dict[str, Any] = self.states.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.02)
        raise AssertionError(f"{arn} still running after {DEADLINE_SECONDS} s")

    def task_endings(self, arn: str) -> list[dict[str, Any]]:
        """The task's TaskSucceeded/TaskFailed history events: one per completed token."""
        events = self.states.get_execution_history(executionArn=arn)["events"]
        return [event for event in events if event["type"] in {"TaskSucceeded", "TaskFailed"}]

    def stop_running(self) -> None:
        for arn in self.started:
            if self.status(arn) == "RUNNING":
                self.states.stop_execution(executionArn=arn)


@pytest.fixture
def workflow(account: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    # What mock_aws(config={"stepfunctions": {"execute_state_machine": True}}) sets, for this test only.
    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    flow = Workflow()
    yield flow
    flow.stop_running()


@pytest.fixture
def table(run_table: RunTable) -> ScaleOutTable:
    return ScaleOutTable(TableSettings.from_env())


def run_items(run_id: str = RUN) -> dict[str, dict[str, Any]]:
    """The run's items in the table, by sort key."""
    found = (
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .query(KeyConditionExpression=Key("pk").eq(f"RUN#{run_id}"))
    )
    return {item["sk"]: item for item in found["Items"]}


def table_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return items


def logged(run_id: str = RUN) -> list[str]:
    return sorted(sk for sk in run_items(run_id) if sk.startswith("EVENT#"))


def waiter(run_id: str = RUN) -> dict[str, Any]:
    return run_items(run_id)["SCALEOUT_WAIT"]


def expected_output(event: dict[str, Any], *unsuccessful: dict[str, Any]) -> dict[str, Any]:
    """The task's output for the launch ``event``, after the ``unsuccessful`` launch events."""
    return {
        "instance_id": event["detail"]["EC2InstanceId"],
        "launched_at": event["detail"]["StartTime"].replace("Z", "+00:00"),
        "event_id": event["id"],
        "activity_id": event["detail"]["ActivityId"],
        "seen_in": "event",
        "availability_zone": event["detail"]["Details"]["Availability Zone"],
        "unsuccessful_launches": len(unsuccessful),
        "unsuccessful": [
            {
                "availability_zone": failed["detail"]["Details"]["Availability Zone"],
                "status_message": failed["detail"]["StatusMessage"],
            }
            for failed in unsuccessful
        ],
    }


@contextmanager
def just_before(operation: str, action: Callable[[], Any]) -> Iterator[list[Any]]:
    """Run ``action`` once, right before scalelab's next DynamoDB ``operation`` request goes out.

    This stages an exact interleaving of the two functions against the real
    (emulated) table; the code under test runs unchanged.
    """
    results: list[Any] = []

    def interleave(**_: Any) -> None:
        if not results:
            results.append(None)
            results[0] = action()

    event = f"before-call.dynamodb.{operation}"
    aws.client("dynamodb").meta.events.register(event, interleave)
    try:
        yield results
    finally:
        aws.client("dynamodb").meta.events.unregister(event, interleave)


# ---- the two orders ---------------------------------------------------------------------


def test_token_first_then_the_launch_completes_the_execution_once(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    assert wait(execution.payload, table) == AwaitScaleOutResult(run_id=RUN, waiting=True)
    launch = aws_event("launch-successful")

    result = deliver(launch, table)

    assert result == ScalingEventResult(
        run_id=RUN,
        event_id=launch["id"],
        detail_type=launch["detail-type"],
        duplicate=False,
        completion="succeeded",
    )
    described = workflow.finished(execution.arn)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == expected_output(launch)
    assert len(workflow.task_endings(execution.arn)) == 1
    assert waiter()["completed_by"] == launch["id"]
    assert waiter()["outcome"] == "succeeded"
    assert "completed_at" in waiter()


def test_launch_first_then_the_token_is_completed_when_it_is_stored(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    launch = aws_event("launch-successful")
    assert deliver(launch, table) == ScalingEventResult(
        run_id=RUN,
        event_id=launch["id"],
        detail_type=launch["detail-type"],
        duplicate=False,
        completion="no_waiter",
    )
    execution = workflow.start()

    result = wait(execution.payload, table)

    assert result == AwaitScaleOutResult(
        run_id=RUN, waiting=False, completed_by=launch["id"], outcome="succeeded"
    )
    described = workflow.finished(execution.arn)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == expected_output(launch)
    assert len(workflow.task_endings(execution.arn)) == 1


def test_the_earliest_launch_after_the_stress_started_is_the_one_reported(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    later = aws_event("launch-successful", launched=STRESS_STARTED + timedelta(minutes=9))
    earlier = aws_event("launch-successful", launched=STRESS_STARTED + timedelta(minutes=3))
    deliver(later, table)
    deliver(earlier, table)
    execution = workflow.start()

    assert wait(execution.payload, table).completed_by == earlier["id"]
    assert json.loads(workflow.finished(execution.arn)["output"]) == expected_output(earlier)


# ---- the two functions at the same moment ----------------------------------------------------


def test_a_launch_recorded_while_the_token_is_being_stored_completes_it_once(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    launch = aws_event("launch-successful")

    # The waiter is written and read back; before await looks at the log, the event arrives.
    with just_before("Query", lambda: deliver(launch, table)) as during:
        awaited = wait(execution.payload, table)

    (delivered,) = during
    assert isinstance(delivered, ScalingEventResult)
    assert delivered.completion == "succeeded"
    assert awaited == AwaitScaleOutResult(run_id=RUN, waiting=False, completed_by=launch["id"])
    assert workflow.finished(execution.arn)["status"] == "SUCCEEDED"
    assert len(workflow.task_endings(execution.arn)) == 1


def test_a_token_stored_while_the_launch_is_being_recorded_completes_it_once(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    launch = aws_event("launch-successful")

    # The event is logged; before it looks for a waiter, the token is stored.
    with just_before("GetItem", lambda: wait(execution.payload, table)) as during:
        delivered = deliver(launch, table)

    (awaited,) = during
    assert awaited == AwaitScaleOutResult(
        run_id=RUN, waiting=False, completed_by=launch["id"], outcome="succeeded"
    )
    assert isinstance(delivered, ScalingEventResult)
    assert delivered.completion == "already_completed"
    assert workflow.finished(execution.arn)["status"] == "SUCCEEDED"
    assert len(workflow.task_endings(execution.arn)) == 1


# ---- duplicates, order and retries ---------------------------------------------------------


def test_a_duplicate_event_is_logged_once_and_completes_once(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    wait(execution.payload, table)
    launch = aws_event("launch-successful")

    first = deliver(launch, table)
    second = deliver(launch, table)

    assert isinstance(first, ScalingEventResult)
    assert isinstance(second, ScalingEventResult)
    assert (first.duplicate, first.completion) == (False, "succeeded")
    assert (second.duplicate, second.completion) == (True, "already_completed")
    assert logged() == [f"EVENT#{launch['id']}"]
    assert workflow.finished(execution.arn)["status"] == "SUCCEEDED"
    assert len(workflow.task_endings(execution.arn)) == 1


def test_a_launch_from_before_the_stress_does_not_complete_the_token(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    wait(execution.payload, table)
    early = aws_event("launch-successful", launched=STRESS_STARTED - timedelta(minutes=2))

    result = deliver(early, table)

    assert isinstance(result, ScalingEventResult)
    assert result.completion == "not_qualifying"
    assert logged() == [f"EVENT#{early['id']}"]
    assert "completed_by" not in waiter()
    assert workflow.status(execution.arn) == "RUNNING"


def test_a_logged_launch_from_before_the_stress_leaves_the_new_token_waiting(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    deliver(aws_event("launch-successful", launched=STRESS_STARTED - timedelta(seconds=1)), table)
    execution = workflow.start()

    assert wait(execution.payload, table) == AwaitScaleOutResult(run_id=RUN, waiting=True)
    assert workflow.status(execution.arn) == "RUNNING"


def test_a_retried_await_with_the_same_token_is_harmless(workflow: Workflow, table: ScaleOutTable) -> None:
    execution = workflow.start()
    assert wait(execution.payload, table).waiting is True
    assert wait(execution.payload, table).waiting is True
    launch = aws_event("launch-successful")
    deliver(launch, table)

    again = wait(execution.payload, table)

    assert again == AwaitScaleOutResult(
        run_id=RUN, waiting=False, completed_by=launch["id"], outcome="succeeded"
    )
    assert workflow.finished(execution.arn)["status"] == "SUCCEEDED"
    assert len(workflow.task_endings(execution.arn)) == 1


def test_a_new_token_replaces_one_still_waiting(workflow: Workflow, table: ScaleOutTable) -> None:
    abandoned = workflow.start()
    wait(abandoned.payload, table)
    current = workflow.start()
    wait(current.payload, table)

    deliver(aws_event("launch-successful"), table)

    assert workflow.finished(current.arn)["status"] == "SUCCEEDED"
    assert workflow.status(abandoned.arn) == "RUNNING"
    assert waiter()["task_token"] == current.payload["task_token"]


def test_step_functions_out_of_reach_is_raised_and_the_redelivery_completes(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    wait(execution.payload, table)
    launch = aws_event("launch-successful")

    with aws_fault("stepfunctions", "SendTaskSuccess", "ServiceUnavailable"), pytest.raises(ClientError):
        deliver(launch, table)
    assert waiter()["completed_by"] == launch["id"]
    assert "completed_at" not in waiter()
    assert workflow.status(execution.arn) == "RUNNING"

    # EventBridge retries the failed invocation with the same event.
    retried = deliver(launch, table)

    assert isinstance(retried, ScalingEventResult)
    assert (retried.duplicate, retried.completion) == (True, "succeeded")
    assert workflow.finished(execution.arn)["status"] == "SUCCEEDED"
    assert len(workflow.task_endings(execution.arn)) == 1


def test_a_workflow_that_stopped_waiting_is_noted_not_raised(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start(within_seconds=1)
    wait(execution.payload, table)
    timed_out = workflow.finished(execution.arn)
    assert timed_out["status"] == "FAILED"
    assert timed_out["error"] == "States.Timeout"

    result = deliver(aws_event("launch-successful"), table)

    assert isinstance(result, ScalingEventResult)
    assert result.completion == "stale"
    assert waiter()["outcome"] == "stale"


# ---- what fails the wait, and what is only logged --------------------------------------------


def test_an_unsuccessful_launch_is_logged_and_the_wait_goes_on(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    # Auto Scaling tries again, in another zone say, until the wait's deadline.
    execution = workflow.start()
    wait(execution.payload, table)
    failure = aws_event("launch-unsuccessful")

    result = deliver(failure, table)

    assert isinstance(result, ScalingEventResult)
    assert result.completion == "not_qualifying"
    assert logged() == [f"EVENT#{failure['id']}"]
    assert workflow.status(execution.arn) == "RUNNING"
    launch = aws_event("launch-successful", launched=STRESS_STARTED + timedelta(minutes=6))
    assert isinstance(completed := deliver(launch, table), ScalingEventResult)
    assert completed.completion == "succeeded"
    # The scale-out names the launch that failed before it, with AWS's reason, for the verdict.
    assert json.loads(workflow.finished(execution.arn)["output"]) == expected_output(launch, failure)


def _with_cause(event: dict[str, Any], cause: str) -> dict[str, Any]:
    event["detail"]["Cause"] = cause
    return event


def _naming(event: dict[str, Any], instance_id: str) -> dict[str, Any]:
    event["detail"]["EC2InstanceId"] = instance_id
    return event


@pytest.mark.parametrize(
    ("case", "launch"),
    [
        (
            "a replacement of an unhealthy instance under stress",
            lambda: _with_cause(
                aws_event("launch-successful"),
                "At 2026-01-15T10:04:00Z an instance was started in response to an unhealthy instance "
                "needing to be replaced.",
            ),
        ),
        (
            "an event naming one of the group's original instances",
            lambda: _naming(aws_event("launch-successful"), INSTANCES_BEFORE[0]),
        ),
        (
            "a launch back up to the starting capacity",
            lambda: _with_cause(
                aws_event("launch-successful"),
                "At 2026-01-15T10:04:00Z a user request explicitly set group desired capacity changing "
                "the desired capacity from 1 to 2.",
            ),
        ),
    ],
)
def test_a_launch_that_is_not_a_scale_out_leaves_the_wait_going(
    workflow: Workflow, table: ScaleOutTable, case: str, launch: Callable[[], dict[str, Any]]
) -> None:
    # Issue 15 #2: any successful launch passed the run.
    execution = workflow.start()
    wait(execution.payload, table)

    result = deliver(launch(), table)

    assert isinstance(result, ScalingEventResult), case
    assert result.completion == "not_qualifying", case
    assert workflow.status(execution.arn) == "RUNNING", case
    assert "completed_by" not in waiter(), case


def test_a_terminate_event_is_only_logged(workflow: Workflow, table: ScaleOutTable) -> None:
    execution = workflow.start()
    wait(execution.payload, table)
    terminate = aws_event("terminate-successful")

    result = deliver(terminate, table)

    assert isinstance(result, ScalingEventResult)
    assert result.completion == "not_qualifying"
    entry = run_items()[f"EVENT#{terminate['id']}"]
    assert entry["detail_type"] == "EC2 Instance Terminate Successful"
    assert entry["instance_id"] == terminate["detail"]["EC2InstanceId"]
    assert entry["activity_id"] == terminate["detail"]["ActivityId"]
    assert entry["status_code"] == "InProgress"
    assert entry["expires_at"] > time.time() + 80 * 86_400
    assert "completed_by" not in waiter()
    assert workflow.status(execution.arn) == "RUNNING"


def _other_source() -> dict[str, Any]:
    event = aws_event("launch-successful")
    event["source"] = "aws.ec2"
    return event


def _other_group() -> dict[str, Any]:
    event = aws_event("launch-successful")
    event["detail"]["AutoScalingGroupName"] = "web-prod"
    return event


def _lifecycle_action() -> dict[str, Any]:
    event = aws_event("launch-successful")
    event["detail-type"] = "EC2 Instance-launch Lifecycle Action"
    event["detail"] = {"AutoScalingGroupName": f"scalelab-{RUN}", "LifecycleHookName": "hook"}
    return event


@pytest.mark.parametrize(
    ("make_event", "reason"),
    [
        (_other_source, "source 'aws.ec2' is not 'aws.autoscaling'"),
        (_other_group, "group 'web-prod' is not a scalelab run's group"),
        (_lifecycle_action, "is not a launch or a termination"),
    ],
)
def test_events_not_for_scalelab_are_ignored_and_nothing_is_written(
    workflow: Workflow, table: ScaleOutTable, make_event: Callable[[], dict[str, Any]], reason: str
) -> None:
    execution = workflow.start()
    wait(execution.payload, table)
    before = table_items()

    result = deliver(make_event(), table)

    assert isinstance(result, IgnoredScalingEvent)
    assert reason in result.ignored
    assert table_items() == before
    assert workflow.status(execution.arn) == "RUNNING"


# ---- malformed input ----------------------------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    event = aws_event("launch-successful")
    *parents, name = path.split(".")
    target = event
    for parent in parents:
        target = target[parent]
    del target[name]
    return event


def _with(path: str, value: Any) -> dict[str, Any]:
    event = aws_event("launch-successful")
    *parents, name = path.split(".")
    target = event
    for parent in parents:
        target = target[parent]
    target[name] = value
    return event


@pytest.mark.parametrize(
    ("make_event", "field"),
    [
        (lambda: _without("id"), "id: Field required"),
        (lambda: _without("detail-type"), "detail-type: Field required"),
        (lambda: _with("time", "yesterday"), "time: Input should be a valid datetime"),
        (lambda: _without("detail.AutoScalingGroupName"), "detail.AutoScalingGroupName: Field required"),
        (lambda: _without("detail.ActivityId"), "detail.ActivityId: Field required"),
        (lambda: _with("detail.StartTime", "soon"), "detail.StartTime: Input should be a valid datetime"),
        (lambda: _with("detail.EC2InstanceId", ""), "detail.EC2InstanceId: a launch that succeeded"),
        (lambda: ["not", "an", "event"], "expected a JSON object, got list"),
    ],
)
def test_a_malformed_event_is_invalid_input_naming_the_field(
    table: ScaleOutTable, make_event: Callable[[], Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        deliver(make_event(), table)

    assert field in str(caught.value)
    assert table_items() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task_token": ""}, "task_token: String should have at least 1 character"),
        (
            {"auto_scaling_group_name": "scalelab-other-run"},
            "auto_scaling_group_name: 'scalelab-other-run' is not",
        ),
        ({"stress_started_at": "after lunch"}, "stress_started_at: Input should be a valid datetime"),
        ({"run_id": "Not A Run"}, "run_id: String should match pattern"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_await_event_is_invalid_input_naming_the_field(
    table: ScaleOutTable, change: dict[str, Any], field: str
) -> None:
    payload = {
        "run_id": RUN,
        "auto_scaling_group_name": f"scalelab-{RUN}",
        "task_token": "token",
        "stress_started_at": STRESS_STARTED.isoformat(),
        **change,
    }

    with pytest.raises(InvalidInput) as caught:
        wait(payload, table)

    assert field in str(caught.value)
    assert table_items() == []


# ---- the handlers, with the sample events ----------------------------------------------------


def test_the_handlers_meet_with_the_sample_events(
    workflow: Workflow,
    run_table: RunTable,
    load_handler: Callable[[str], ModuleType],
    lambda_context: FakeLambdaContext,
) -> None:
    awaiter = load_handler("AwaitScaleOutFunction")
    listener = load_handler("OnScalingEventFunction")
    sample_wait = json.loads((EVENTS / "await_scale_out.json").read_text())
    sample_event = json.loads((EVENTS / "on_scaling_event.json").read_text())

    awaited = awaiter.lambda_handler(sample_wait, lambda_context)
    heard = listener.lambda_handler(sample_event, lambda_context)

    assert awaited == {"run_id": "sample-run-0001", "waiting": True, "completed_by": None, "outcome": None}
    # The sample token was never handed out by Step Functions, which says so.
    assert heard == {
        "run_id": "sample-run-0001",
        "event_id": sample_event["id"],
        "detail_type": "EC2 Instance Launch Successful",
        "duplicate": False,
        "completion": "stale",
    }
    assert waiter("sample-run-0001")["completed_by"] == sample_event["id"]


# ---- the cross-check at the deadline: the group's scaling activities decide ---------------------


def _group(name: str) -> Any:
    return autoscaling_backends[ACCOUNT_ID][REGION].autoscaling_groups[name]


def _deadline_check(lab: ProvisionResult, stress_started_at: datetime) -> CheckScaleOutEvent:
    instances = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[lab.auto_scaling_group_name]
    )["AutoScalingGroups"][0]["Instances"]
    return CheckScaleOutEvent(
        run_id=RUN,
        auto_scaling_group_name=lab.auto_scaling_group_name,
        stress_started_at=stress_started_at,
        instances_before=[instance["InstanceId"] for instance in instances],
        desired_capacity=2,
        waited_seconds=900,
    )


def test_a_scale_out_no_event_reported_is_found_in_the_scaling_activities(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    check = _deadline_check(lab, datetime.now(UTC) - timedelta(minutes=5))
    alarm = (
        "At 2026-01-15T10:03:55Z a monitor alarm TargetTracking-x-AlarmHigh in state ALARM triggered "
        f"policy {RUN}-target-tracking changing the desired capacity from 2 to 3."
    )
    with moto_fixes.capacity_cause(alarm):
        boto3.client("autoscaling").set_desired_capacity(
            AutoScalingGroupName=lab.auto_scaling_group_name, DesiredCapacity=3
        )

    found = check_scale_out(check, table)

    assert found.seen_in == "scaling_activities"
    assert found.instance_id not in check.instances_before
    assert found.event_id is None


def test_a_scale_out_after_a_failed_launch_names_its_zone_and_aws_reason(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    # DescribeScalingActivities gives an activity's Details as JSON text, not as an object.
    check = _deadline_check(lab, datetime.now(UTC) - timedelta(minutes=5))
    unsupported = "Your requested instance type (t3.micro) is not supported in your requested zone."
    alarm = (
        "At 2026-01-15T10:03:55Z a monitor alarm TargetTracking-x-AlarmHigh in state ALARM triggered "
        f"policy {RUN}-target-tracking changing the desired capacity from 2 to 3."
    )
    moto_fixes.record_activity(
        _group(lab.auto_scaling_group_name),
        Description=f"Launching a new EC2 instance.  Status Reason: {unsupported}",
        Cause=alarm,
        StatusCode="Failed",
        StatusMessage=unsupported,
        Details=json.dumps({"Subnet ID": "subnet-1", "Availability Zone": "us-east-1a"}),
    )
    with moto_fixes.capacity_cause(alarm):
        boto3.client("autoscaling").set_desired_capacity(
            AutoScalingGroupName=lab.auto_scaling_group_name, DesiredCapacity=3
        )

    found = check_scale_out(check, table)

    assert found.seen_in == "scaling_activities"
    launched_in = boto3.client("ec2").describe_instances(InstanceIds=[found.instance_id])
    assert (
        found.availability_zone
        == launched_in["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    )
    assert found.unsuccessful_launches == 1
    assert [(u.availability_zone, u.status_message) for u in found.unsuccessful] == [
        ("us-east-1a", unsupported)
    ]


def test_launches_that_all_failed_name_aws_reasons(lab: ProvisionResult, table: ScaleOutTable) -> None:
    check = _deadline_check(lab, datetime.now(UTC) - timedelta(minutes=5))
    for zone in ("us-east-1a", "us-east-1b"):
        moto_fixes.record_activity(
            _group(lab.auto_scaling_group_name),
            Description="Launching a new EC2 instance.  Status Reason: no capacity",
            Cause="At 2026-01-15T10:03:55Z a monitor alarm changing the desired capacity from 2 to 3.",
            StatusCode="Failed",
            StatusMessage=f"We currently do not have sufficient t3.micro capacity in {zone}.",
        )

    with pytest.raises(ScaleOutFailed) as failed:
        check_scale_out(check, table)

    assert str(failed.value).startswith("2 launches failed within 900 s and none succeeded; AWS said: ")
    assert "capacity in us-east-1a." in str(failed.value)
    assert "capacity in us-east-1b." in str(failed.value)


def test_without_any_launch_since_the_stress_there_is_no_scale_out(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    # The group's own creation launched two instances: before the stress, and no growth beyond 2.
    check = _deadline_check(lab, datetime.now(UTC) - timedelta(minutes=5))
    replacement = "At 2026-01-15T10:04:00Z an instance was started in response to an unhealthy instance."
    with moto_fixes.capacity_cause(replacement):
        boto3.client("autoscaling").set_desired_capacity(
            AutoScalingGroupName=lab.auto_scaling_group_name, DesiredCapacity=3
        )

    with pytest.raises(NoScaleOut, match=r"^no scale-out within 900 s"):
        check_scale_out(check, table)


def test_event_text_is_kept_as_data_bounded_and_without_control_characters(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    # Issue 15 #6: text from a forged event became the verdict as it was.
    execution = workflow.start()
    wait(execution.payload, table)
    failure = aws_event("launch-unsuccessful")
    failure["detail"]["StatusMessage"] = (
        "Capacity issue\n\x1b[31mfix it at http://example.invalid " + "x" * 5000
    )

    deliver(failure, table)

    entry = run_items()[f"EVENT#{failure['id']}"]
    assert len(entry["status_message"]) == 1000
    assert "\n" not in entry["status_message"]
    assert "\x1b" not in entry["status_message"]


def test_a_launch_still_under_way_at_the_deadline_is_too_slow_not_absent(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    check = _deadline_check(lab, datetime.now(UTC) - timedelta(minutes=5))
    moto_fixes.record_activity(
        _group(lab.auto_scaling_group_name),
        Description="Launching a new EC2 instance",
        Cause="At 2026-01-15T10:03:55Z a monitor alarm changing the desired capacity from 2 to 3.",
        StatusCode="PreInService",
    )

    with pytest.raises(ScaleOutTooSlow, match=r"still under way \(PreInService\) when the 900 s were up"):
        check_scale_out(check, table)


def test_activities_other_than_launches_are_not_counted_as_launches(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    check = _deadline_check(lab, datetime.now(UTC) - timedelta(minutes=5))
    group = _group(lab.auto_scaling_group_name)
    moto_fixes.record_activity(
        group,
        Description="Terminating EC2 instance: i-0123456789abcdef0",
        Cause="At 2026-01-15T10:03:50Z an instance was taken out of service in response to a health check.",
        StatusCode="Failed",
        StatusMessage="The instance is still being stopped.",
    )
    moto_fixes.record_activity(
        group,
        Description="Launching a new EC2 instance.  Status Reason: no capacity",
        Cause="At 2026-01-15T10:03:55Z a monitor alarm changing the desired capacity from 2 to 3.",
        StatusCode="Failed",
        StatusMessage="We currently do not have sufficient t3.micro capacity in us-east-1a.",
    )

    with pytest.raises(ScaleOutFailed) as failed:
        check_scale_out(check, table)

    assert str(failed.value).startswith("1 launch failed within 900 s and none succeeded; AWS said: ")
    assert "still being stopped" not in str(failed.value)


def test_a_second_launch_while_the_first_holds_the_claim_leaves_the_completion_to_the_first(
    workflow: Workflow, table: ScaleOutTable
) -> None:
    execution = workflow.start()
    wait(execution.payload, table)
    first = aws_event("launch-successful")
    with aws_fault("stepfunctions", "SendTaskSuccess", "ServiceUnavailable"), pytest.raises(ClientError):
        deliver(first, table)

    second = deliver(aws_event("launch-successful", STRESS_STARTED + timedelta(minutes=5)), table)

    assert isinstance(second, ScalingEventResult)
    assert (second.duplicate, second.completion) == (False, "claimed_elsewhere")
    assert waiter()["completed_by"] == first["id"]
    assert workflow.status(execution.arn) == "RUNNING"
    # EventBridge's retry of the first completes the execution with the first launch.
    retried = deliver(first, table)
    assert isinstance(retried, ScalingEventResult)
    assert retried.completion == "succeeded"
    assert workflow.finished(execution.arn)["status"] == "SUCCEEDED"
