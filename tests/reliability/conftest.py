"""The fault-injection matrix's account, its sweep, and the tally for the summary line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from scalelab_rehearsal.emulator import Emulator

from scalelab.core.naming import RUN_TAG
from scalelab.resources.discovery import LIVE_INSTANCE_STATES
from tests.support.summary import SUMMARY

# The tally for the summary line, added up over the workers (tests/support/summary.py).
TALLY = SUMMARY.fault_matrix


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh account per case, so a case's leftovers cannot hide in another's."""
    with Emulator() as started:
        yield started


def everything_tagged(emulator: Emulator) -> list[str]:
    """Every live resource carrying a ``scalelab:run`` tag, of any run (asked with the rehearsal's
    own clients, which injected API faults spare)."""
    tagged = emulator.client("resourcegroupstaggingapi").get_resources(TagFilters=[{"Key": RUN_TAG}])
    found = [
        mapping["ResourceARN"]
        for mapping in tagged["ResourceTagMappingList"]
        if ":instance/" not in mapping["ResourceARN"]  # instances: live ones below
    ]
    reservations = emulator.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag-key", "Values": [RUN_TAG]},
            {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES},
        ]
    )["Reservations"]
    found += [instance["InstanceId"] for reservation in reservations for instance in reservation["Instances"]]
    groups = emulator.client("autoscaling").describe_auto_scaling_groups(
        Filters=[{"Name": "tag-key", "Values": [RUN_TAG]}]
    )["AutoScalingGroups"]
    found += [group["AutoScalingGroupName"] for group in groups]
    return sorted(found)


def table_items(emulator: Emulator, sort_key: str) -> list[dict[str, Any]]:
    items = emulator.client("dynamodb").scan(
        TableName=emulator.stack.outputs["RunTableName"] if emulator.stack else "",
        FilterExpression="sk = :sk",
        ExpressionAttributeValues={":sk": {"S": sort_key}},
        ConsistentRead=True,
    )["Items"]
    return list(items)


def sweep(emulator: Emulator) -> dict[str, Any]:
    """The janitor's scheduled sweep, invoked as the schedule would."""
    assert emulator.stack is not None
    answer = emulator.client("lambda").invoke(
        FunctionName=emulator.stack.resources["JanitorFunction"], Payload=json.dumps({"action": "sweep"})
    )
    result: dict[str, Any] = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, result
    return result
