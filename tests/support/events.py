"""The sample events in events/, and a handler invoked with one the way `sam local invoke -e` would."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from tests.support.template import ROOT, function_code, resource

EVENTS = ROOT / "events"


def event_for(logical_id: str) -> dict[str, Any]:
    code_dir = Path(resource(logical_id)["Properties"]["CodeUri"]).name
    loaded: dict[str, Any] = json.loads((EVENTS / f"{code_dir}.json").read_text())
    return loaded


def invoke(handler_module: ModuleType, logical_id: str, event: Any, context: Any) -> Any:
    _path, _module, function = function_code(logical_id)
    return getattr(handler_module, function)(event, context)


def with_emulated_network(event: dict[str, Any]) -> dict[str, Any]:
    """The sample's subnet and VPC ids, swapped for the emulated account's default VPC.

    moto gives its default subnets new random ids in every account, so a
    checked-in id cannot exist there; everything else is the sample as is.
    """
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    zones: dict[str, str] = {}
    for subnet in subnets:
        zones.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
    lab = {
        **event["lab"],
        "vpc_id": vpc,
        "subnet_ids": sorted(zones.values())[: len(event["lab"]["subnet_ids"])],
    }
    return {**event, "lab": lab}
