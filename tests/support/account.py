"""Look into the emulated account: what a run left behind, and AWS faults on demand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from scalelab import aws
from scalelab.naming import RUN_TAG

LIVE_INSTANCE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


def _run_filter(run_id: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{RUN_TAG}", "Values": [run_id]}]


def _elb_tagged(arns: list[str], run_id: str) -> list[str]:
    if not arns:
        return []
    elbv2 = boto3.client("elbv2")
    tagged = []
    for start in range(0, len(arns), 20):
        for description in elbv2.describe_tags(ResourceArns=arns[start : start + 20])["TagDescriptions"]:
            if {"Key": RUN_TAG, "Value": run_id} in description["Tags"]:
                tagged.append(description["ResourceArn"])
    return tagged


def tagged_resources(run_id: str) -> dict[str, list[str]]:
    """Every resource in the account carrying ``scalelab:run=<run_id>``, by kind (live ones only)."""
    ec2 = boto3.client("ec2")
    elbv2 = boto3.client("elbv2")
    autoscaling = boto3.client("autoscaling")
    load_balancers = [lb["LoadBalancerArn"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]]
    listeners = [
        listener["ListenerArn"]
        for arn in load_balancers
        for listener in elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]
    ]
    reservations = ec2.describe_instances(
        Filters=[*_run_filter(run_id), {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    )["Reservations"]
    found = {
        "security_groups": [
            group["GroupId"]
            for group in ec2.describe_security_groups(Filters=_run_filter(run_id))["SecurityGroups"]
        ],
        "launch_templates": [
            template["LaunchTemplateId"]
            for template in ec2.describe_launch_templates(Filters=_run_filter(run_id))["LaunchTemplates"]
        ],
        "instances": [instance["InstanceId"] for r in reservations for instance in r["Instances"]],
        "load_balancers": _elb_tagged(load_balancers, run_id),
        "listeners": _elb_tagged(listeners, run_id),
        "target_groups": _elb_tagged(
            [tg["TargetGroupArn"] for tg in elbv2.describe_target_groups()["TargetGroups"]], run_id
        ),
        "auto_scaling_groups": [
            group["AutoScalingGroupName"]
            for group in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
            if {"Key": RUN_TAG, "Value": run_id}
            in [{"Key": tag["Key"], "Value": tag["Value"]} for tag in group.get("Tags", [])]
        ],
    }
    return {kind: ids for kind, ids in found.items() if ids}


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
    ec2 = boto3.client("ec2")
    elbv2 = boto3.client("elbv2")
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    )["Reservations"]
    found = {
        "instances": [instance["InstanceId"] for r in reservations for instance in r["Instances"]],
        "security_groups": [
            group["GroupId"]
            for group in ec2.describe_security_groups()["SecurityGroups"]
            if group["GroupName"] != "default"
        ],
        "launch_templates": [
            template["LaunchTemplateId"] for template in ec2.describe_launch_templates()["LaunchTemplates"]
        ],
        "load_balancers": [lb["LoadBalancerArn"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]],
        "target_groups": [tg["TargetGroupArn"] for tg in elbv2.describe_target_groups()["TargetGroups"]],
        "auto_scaling_groups": [
            group["AutoScalingGroupName"]
            for group in boto3.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
        ],
    }
    return {kind: ids for kind, ids in found.items() if ids}
