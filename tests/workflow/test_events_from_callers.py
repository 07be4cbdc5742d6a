"""Events only AWS may put: a caller cannot forge an Auto Scaling event into a running lab.

EventBridge refuses a PutEvents entry whose source starts with ``aws.`` from any
caller (``NotAuthorizedForSourceException``); only the services themselves put
such events. The emulator must refuse them too, while its simulated world, which
plays Auto Scaling, still delivers its own.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from scalelab_rehearsal.rehearse import history, merged_input

from tests.workflow.conftest import EXECUTION_DEADLINE_SECONDS, Rehearsal

FORGED_MESSAGE = "Capacity issue: fix it at http://forged.example/"


def _waiting_group(rehearsal: Rehearsal, arn: str) -> str:
    """The group AwaitScaleOut waits for, once its task token wait has begun. Given as long as a
    whole execution: the first Lambda's cold start alone can take half a minute on a loaded machine."""
    deadline = time.monotonic() + EXECUTION_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        events = history(rehearsal.emulator, arn)
        if any(event["type"] == "TaskSubmitted" for event in events):
            scheduled = next(event for event in events if event["type"] == "TaskScheduled")
            parameters = json.loads(scheduled["taskScheduledEventDetails"]["parameters"])
            group: str = parameters["Payload"]["auto_scaling_group_name"]
            return group
        if any(
            event["type"].startswith("Execution") and event["type"] != "ExecutionStarted" for event in events
        ):
            raise AssertionError(f"the execution ended before AwaitScaleOut waited: {events[-1]}")
        time.sleep(0.05)
    raise TimeoutError(f"AwaitScaleOut did not begin its wait within {EXECUTION_DEADLINE_SECONDS} s")


def _forged_launch_failure(group: str) -> dict[str, Any]:
    detail = {
        "AutoScalingGroupName": group,
        "ActivityId": "0f000000-0000-4000-8000-000000000000",
        "StatusCode": "Failed",
        "StatusMessage": FORGED_MESSAGE,
        "Cause": "forged",
        "EC2InstanceId": "",
    }
    return {
        "Source": "aws.autoscaling",
        "DetailType": "EC2 Instance Launch Unsuccessful",
        "Detail": json.dumps(detail),
        "Resources": [],
    }


@pytest.mark.scenario("no-scale-out")
def test_a_caller_cannot_put_an_auto_scaling_event_into_a_running_lab(rehearsal: Rehearsal) -> None:
    # Given a run waiting for its scale-out, which never comes in this world
    arn = rehearsal.start(merged_input(None), "wf-forged-event")
    group = _waiting_group(rehearsal, arn)
    # (a caller as `aws events put-events --endpoint-url` is: the emulator's endpoint, nothing else)
    caller = boto3.client("events", endpoint_url=rehearsal.emulator.endpoint, region_name="us-east-1")

    # When a caller puts an "EC2 Instance Launch Unsuccessful" event for the run's group
    answer = caller.put_events(Entries=[_forged_launch_failure(group)])
    outcome = rehearsal.finish(arn)

    # Then EventBridge refuses the entry, as AWS does, and the run never sees it
    assert answer["FailedEntryCount"] == 1
    assert answer["Entries"][0]["ErrorCode"] == "NotAuthorizedForSourceException"
    assert answer["Entries"][0]["ErrorMessage"] == "Not authorized for the source."
    assert "EventId" not in answer["Entries"][0]
    assert rehearsal.logged_event_types(outcome.run_id) == []
    assert outcome.cause is not None
    assert FORGED_MESSAGE not in outcome.cause
    assert outcome.cause.startswith("failed at scale_out: no scale-out within 8 s")


def test_a_caller_still_puts_its_own_events_beside_a_refused_one(rehearsal: Rehearsal) -> None:
    caller = boto3.client("events", endpoint_url=rehearsal.emulator.endpoint, region_name="us-east-1")
    own = {"Source": "scalelab.test", "DetailType": "test", "Detail": "{}", "Resources": []}

    answer = caller.put_events(Entries=[own, _forged_launch_failure("scalelab-any"), own])

    assert answer["FailedEntryCount"] == 1
    assert [sorted(entry) for entry in answer["Entries"]] == [
        ["EventId"],
        ["ErrorCode", "ErrorMessage"],
        ["EventId"],
    ]
    assert answer["Entries"][1]["ErrorCode"] == "NotAuthorizedForSourceException"


def test_the_worlds_own_auto_scaling_events_still_reach_the_run(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-world-events")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert "EC2 Instance Launch Successful" in rehearsal.logged_event_types(outcome.run_id)
