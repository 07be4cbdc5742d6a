"""Look into the emulated account: what a run left behind, and AWS faults on demand; and a run's
group made in it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.core import aws
from scalelab.core.naming import RUN_TAG
from scalelab.resources.discovery import live_resources

# The tests' own names for the kinds, in what they report.
LABEL = {
    Kind.AUTO_SCALING_GROUP: "auto_scaling_groups",
    Kind.INSTANCE: "instances",
    Kind.LISTENER: "listeners",
    Kind.LOAD_BALANCER: "load_balancers",
    Kind.TARGET_GROUP: "target_groups",
    Kind.LAUNCH_TEMPLATE: "launch_templates",
    Kind.SECURITY_GROUP: "security_groups",
}


def _by_label(found: list[ResourceRef]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for ref in found:
        grouped.setdefault(LABEL[ref.kind], []).append(ref.id)
    return grouped


def tagged_resources(run_id: str) -> dict[str, list[str]]:
    """Every resource in the account carrying ``scalelab:run=<run_id>``, by kind (live ones only).

    Listed through each kind's own API with plain boto3 clients, never scalelab's (whose
    calls a test may be faulting), and never through the Tagging API the janitor relies on.
    """
    return _by_label(
        [ref for ref, tags in live_resources(clients=boto3.client) if tags.get(RUN_TAG) == run_id]
    )


@contextmanager
def aws_fault(service: str, operation: str, code: str, times: int = 1) -> Iterator[list[int]]:
    """Make the next ``times`` calls of ``operation`` by scalelab's clients fail with ``code``.

    This is an AWS-side fault (the API answers with an error), injected where
    botocore would send the request; the code under test runs unchanged.
    Yields a one-element list counting the faults actually served.
    """
    served = [0]

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if served[0] >= times:
            return None
        served[0] += 1
        response = AWSResponse(url="https://emulated", status_code=400, headers={}, raw=None)
        return response, {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {}}

    event = f"before-call.{aws.client(service).meta.service_model.service_id.hyphenize()}.{operation}"
    aws.client(service).meta.events.register(event, fail)
    try:
        yield served
    finally:
        aws.client(service).meta.events.unregister(event, fail)


def lab_resources() -> dict[str, list[str]]:
    """Every resource of a kind a lab is made of, whoever made it and however tagged (live ones only).

    The default VPC's own security groups are not counted: every account has them.
    """
    return _by_label([ref for ref, _tags in live_resources(clients=boto3.client)])


def run_group(name: str, run_id: str, desired: int = 2) -> list[str]:
    """An Auto Scaling group in two of the default VPC's subnets whose instances carry
    ``scalelab:run=<run_id>``; returns their ids, sorted."""
    ec2, autoscaling = boto3.client("ec2"), boto3.client("autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    subnets = [subnet["SubnetId"] for subnet in ec2.describe_subnets()["Subnets"]][:2]
    ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Default"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=desired,
        VPCZoneIdentifier=",".join(subnets),
        Tags=[
            {
                "Key": RUN_TAG,
                "Value": run_id,
                "PropagateAtLaunch": True,
                "ResourceId": name,
                "ResourceType": "auto-scaling-group",
            }
        ],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return sorted(instance["InstanceId"] for instance in group["Instances"])
