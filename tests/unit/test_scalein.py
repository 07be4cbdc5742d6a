"""CheckScaleIn: once the load stopped, the group comes back to its starting capacity.

The lab is provisioned in the emulated account; the scale-out and the scale-in are
played on it as Auto Scaling does them (moto, with ``moto_fixes`` recording each
activity with its Cause); the terminate events are AWS's documented example
(``events/autoscaling-terminate-successful.json``) delivered through OnScalingEvent.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from scalelab_rehearsal import moto_fixes

from scalelab.contracts.base import parse_event
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.run import RunInput
from scalelab.contracts.scaleout import CheckScaleInEvent
from scalelab.core.errors import InvalidInput, NoScaleIn
from scalelab.core.settings import RunDefaults, TableSettings
from scalelab.steps.scaleout import check_scale_in, on_scaling_event
from scalelab.store.runs import RunTable
from scalelab.store.scaleout import ScaleOutTable
from tests.support.template import ROOT

RUN = "scalein-0001"
GROUP = f"scalelab-{RUN}"
WITHIN = 900
SCALE_OUT_CAUSE = (
    "At 2026-01-15T10:03:55Z a monitor alarm TargetTracking-x-AlarmHigh in state ALARM triggered "
    f"policy {RUN}-target-tracking changing the desired capacity from 2 to 3."
)
SCALE_IN_CAUSE = (
    "At 2026-01-15T10:24:00Z a monitor alarm TargetTracking-x-AlarmLow in state ALARM triggered "
    f"policy {RUN}-target-tracking changing the desired capacity from 3 to 2."
)


@pytest.fixture
def table(run_table: RunTable) -> ScaleOutTable:
    return ScaleOutTable(TableSettings.from_env())


def set_capacity(group: str, desired: int, cause: str) -> None:
    with moto_fixes.capacity_cause(cause):
        boto3.client("autoscaling").set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=desired)


def in_service(group: str) -> int:
    groups = boto3.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    return len(groups["AutoScalingGroups"][0]["Instances"])


def poll(load_stopped_at: datetime) -> CheckScaleInEvent:
    return CheckScaleInEvent(
        run_id=RUN,
        auto_scaling_group_name=GROUP,
        load_stopped_at=load_stopped_at,
        desired_capacity=2,
        within_seconds=WITHIN,
    )


def terminate_event(instance_id: str, ended: datetime, cause: str = SCALE_IN_CAUSE) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(
        (ROOT / "events" / "autoscaling-terminate-successful.json").read_text()
    )
    event["id"] = str(uuid.uuid4())
    event["time"] = ended.isoformat().replace("+00:00", "Z")
    event["detail"].update(
        AutoScalingGroupName=GROUP,
        EC2InstanceId=instance_id,
        StartTime=(ended - timedelta(seconds=30)).isoformat().replace("+00:00", "Z"),
        EndTime=ended.isoformat().replace("+00:00", "Z"),
        Cause=cause,
    )
    return event


def deliver(event: dict[str, Any], table: ScaleOutTable) -> None:
    on_scaling_event(parse_event(event, EventBridgeModel, "EventBridge event"), table)


def test_a_terminate_event_after_the_load_stopped_ends_the_wait(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    stopped = datetime.now(UTC) - timedelta(minutes=10)
    set_capacity(GROUP, 3, SCALE_OUT_CAUSE)
    assert not check_scale_in(poll(stopped), table).expectation_met

    set_capacity(GROUP, 2, SCALE_IN_CAUSE)
    ended = stopped + timedelta(minutes=9)
    deliver(terminate_event("i-0a1b2c3d4e5f60099", ended), table)
    found = check_scale_in(poll(stopped), table)

    assert in_service(GROUP) == 2
    assert found.expectation_met is True
    assert found.seen_in == "event"
    assert found.instance_id == "i-0a1b2c3d4e5f60099"
    assert found.scaled_in_at == ended.replace(microsecond=0).isoformat()
    assert found.capacity_change == "from 3 to 2"


def test_a_termination_that_is_no_scale_in_leaves_the_wait_going(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    stopped = datetime.now(UTC) - timedelta(minutes=2)
    # A replacement of an unhealthy instance; and a scale-in from before the load stopped.
    deliver(
        terminate_event(
            "i-0a1b2c3d4e5f60098",
            stopped + timedelta(minutes=1),
            "At 2026-01-15T10:24:10Z an instance was taken out of service in response to an ELB system "
            "health check failure.",
        ),
        table,
    )
    deliver(terminate_event("i-0a1b2c3d4e5f60097", stopped - timedelta(minutes=1)), table)

    assert check_scale_in(poll(stopped), table).expectation_met is False


def test_a_scale_in_no_event_reported_is_found_in_the_scaling_activities_at_the_deadline(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    set_capacity(GROUP, 3, SCALE_OUT_CAUSE)
    stopped = datetime.now(UTC) - timedelta(seconds=WITHIN + 5)
    set_capacity(GROUP, 2, SCALE_IN_CAUSE)

    found = check_scale_in(poll(stopped), table)

    assert found.expectation_met is True
    assert found.seen_in == "scaling_activities"
    assert found.instance_id is not None
    assert found.instance_id.startswith("i-")
    assert found.capacity_change == "from 3 to 2"


def test_a_group_that_stays_up_past_the_deadline_is_no_scale_in_naming_its_size(
    lab: ProvisionResult, table: ScaleOutTable
) -> None:
    set_capacity(GROUP, 3, SCALE_OUT_CAUSE)
    stopped = datetime.now(UTC) - timedelta(seconds=WITHIN + 5)

    with pytest.raises(NoScaleIn) as raised:
        check_scale_in(poll(stopped), table)

    message = str(raised.value)
    assert message.startswith(
        f"no scale-in within {WITHIN} s: the group stayed at 3 instances (desired 3, 2 before the scale-out) "
        f"for {WITHIN + 5} s after the load stopped; "
    )
    assert "scale-in alarm wants 15 one-minute datapoints below the target" in message
    assert in_service(GROUP) == 3


def test_a_scale_in_check_for_another_runs_group_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"auto_scaling_group_name: .* is not run 'scalein-0001'\'s group"):
        parse_event(
            {
                "run_id": RUN,
                "auto_scaling_group_name": "scalelab-other-0001",
                "load_stopped_at": "2026-01-15T10:00:00Z",
                "desired_capacity": 2,
                "within_seconds": WITHIN,
            },
            CheckScaleInEvent,
            "CheckScaleIn event",
        )


def test_the_scale_in_is_absent_by_default_and_counts_towards_the_deadlines_cap(run_table: RunTable) -> None:
    defaults = RunDefaults.from_env()
    assert (
        parse_event({}, RunInput, "run input", context=defaults).expectations.scale_in_within_seconds is None
    )

    with pytest.raises(InvalidInput) as raised:
        parse_event(
            {
                "expectations": {
                    "healthy_within_seconds": 600,
                    "scale_out_within_seconds": 900,
                    "new_instance_healthy_within_seconds": 600,
                    "scale_in_within_seconds": 9000,
                }
            },
            RunInput,
            "run input",
            context=defaults,
        )

    assert "expectations: the 4 deadlines add up to 11100 s, above the RunDeadlinesCapSeconds" in str(
        raised.value
    )
    for bad in (0, 86_401, "soon"):
        with pytest.raises(InvalidInput, match=r"expectations\.scale_in_within_seconds"):
            parse_event(
                {"expectations": {"scale_in_within_seconds": bad}}, RunInput, "run input", context=defaults
            )
