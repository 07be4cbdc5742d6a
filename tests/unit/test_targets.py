"""Check targets: the snapshot of the run's target group, and the deadline."""

from __future__ import annotations

import time

import boto3
import pytest

from scalelab.contracts.base import parse_event
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.targets import CheckTargetsEvent
from scalelab.core.clock import utc_iso
from scalelab.core.errors import InvalidInput, TargetsNotHealthy
from scalelab.steps.targets import check_targets

RUN = "targets-0001"


def expect(
    lab: ProvisionResult, since: float | None = None, within: int = 600, **expectation: object
) -> CheckTargetsEvent:
    return parse_event(
        {
            "run_id": RUN,
            "target_group_arn": lab.target_group_arn,
            "since": utc_iso(time.time() if since is None else since),
            "within_seconds": within,
            **expectation,
        },
        CheckTargetsEvent,
        "CheckTargets event",
    )


def stop_one_instance(lab: ProvisionResult) -> str:
    """A stopped instance is registered but not healthy (moto reports it 'unused')."""
    group = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[lab.auto_scaling_group_name]
    )["AutoScalingGroups"][0]
    instance: str = sorted(member["InstanceId"] for member in group["Instances"])[0]
    boto3.client("ec2").stop_instances(InstanceIds=[instance])
    return instance


def test_all_desired_targets_healthy_meets_the_expectation(lab: ProvisionResult) -> None:
    snapshot = check_targets(expect(lab, healthy_count=2))

    assert snapshot.expectation_met is True
    assert snapshot.counts == {"healthy": 2}
    assert len(snapshot.healthy_instances) == 2


def test_too_few_healthy_targets_before_the_deadline_is_a_snapshot_not_an_error(lab: ProvisionResult) -> None:
    stopped = stop_one_instance(lab)

    snapshot = check_targets(expect(lab, healthy_count=2))

    assert snapshot.expectation_met is False
    assert stopped not in snapshot.healthy_instances
    assert snapshot.counts["healthy"] == 1


def test_past_the_deadline_the_error_carries_the_last_snapshot(lab: ProvisionResult) -> None:
    stopped = stop_one_instance(lab)

    with pytest.raises(TargetsNotHealthy) as caught:
        check_targets(expect(lab, since=time.time() - 700, within=600, healthy_count=2))

    message = str(caught.value)
    assert message.startswith("expected 2 healthy targets within 600 s, but after 70")
    assert "1 healthy" in message
    assert stopped in message


def test_a_given_instance_healthy_meets_the_expectation(lab: ProvisionResult) -> None:
    healthy = check_targets(expect(lab, healthy_count=1)).healthy_instances[0]

    assert check_targets(expect(lab, instance_id=healthy)).expectation_met is True


def test_an_instance_not_registered_is_not_met(lab: ProvisionResult) -> None:
    snapshot = check_targets(expect(lab, instance_id="i-0123456789abcdef0"))

    assert snapshot.expectation_met is False


def test_exactly_one_expectation_is_required() -> None:
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/scalelab-x/0123456789abcdef"
    base = {"run_id": RUN, "target_group_arn": arn, "since": utc_iso(), "within_seconds": 60}

    with pytest.raises(InvalidInput, match="exactly one of healthy_count and instance_id"):
        parse_event(base, CheckTargetsEvent, "CheckTargets event")
    with pytest.raises(InvalidInput, match="exactly one"):
        parse_event(
            {**base, "healthy_count": 1, "instance_id": "i-0123456789abcdef0"}, CheckTargetsEvent, "x"
        )


def test_a_target_group_that_is_not_scalelabs_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="target_group_arn"):
        parse_event(
            {
                "run_id": RUN,
                "target_group_arn": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/prod/1",
                "since": utc_iso(),
                "within_seconds": 60,
                "healthy_count": 1,
            },
            CheckTargetsEvent,
            "CheckTargets event",
        )
