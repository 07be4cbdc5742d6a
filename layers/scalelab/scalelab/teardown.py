"""Teardown: delete what the run's ledger lists, in dependency order, never sleeping.

Each call makes one pass. What AWS is still releasing (a group terminating its
instances, a load balancer's network interfaces holding a security group) is
reported as remaining, and the state machine waits and calls again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from botocore.exceptions import ClientError

from scalelab.aws import client, error_code
from scalelab.ledger import RunTable
from scalelab.models import TeardownResult
from scalelab.naming import RUN_TAG, tag_dict
from scalelab.observability import logger


class Outcome(Enum):
    REMOVED = "removed"
    PENDING = "pending"
    REFUSED = "refused"


class _Gone(Exception):
    """The resource no longer exists: for teardown, the same as removed."""


# Error codes meaning "this resource does not exist (any more)".
NOT_FOUND_CODES = frozenset(
    {
        "InvalidGroup.NotFound",
        "InvalidGroupId.Malformed",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateId.Malformed",
        "LoadBalancerNotFound",
        "TargetGroupNotFound",
        "ListenerNotFound",
        "InvalidInstanceID.NotFound",
        "InvalidInstanceID.Malformed",
    }
)
# Error codes meaning "AWS is still releasing something this depends on: try later".
STILL_RELEASING_CODES = frozenset(
    {"DependencyViolation", "ResourceInUse", "ScalingActivityInProgress", "ResourceInUseFault"}
)

# Dependency order: the group (and its instances) first, the security groups
# last; the instances' group before the load balancer's, which it references.
TEARDOWN_ORDER = (
    "auto_scaling_group",
    "listener",
    "load_balancer",
    "target_group",
    "launch_template",
    "instance_security_group",
    "alb_security_group",
)


def _owned(tags: dict[str, str], run_id: str) -> bool:
    return tags.get(RUN_TAG) == run_id


def _elb_tags(arn: str) -> dict[str, str]:
    descriptions = client("elbv2").describe_tags(ResourceArns=[arn])["TagDescriptions"]
    if not descriptions:
        raise _Gone
    return tag_dict(descriptions[0]["Tags"])


def delete_auto_scaling_group(name: str, run_id: str) -> Outcome:
    autoscaling = client("autoscaling")
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not groups:
        return Outcome.REMOVED
    if not _owned(tag_dict(groups[0].get("Tags")), run_id):
        return Outcome.REFUSED
    if groups[0].get("Status") != "Delete in progress":
        # ForceDelete terminates the instances with the group.
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    still_there = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return Outcome.PENDING if still_there["AutoScalingGroups"] else Outcome.REMOVED


def delete_listener(arn: str, run_id: str) -> Outcome:
    if not _owned(_elb_tags(arn), run_id):
        return Outcome.REFUSED
    client("elbv2").delete_listener(ListenerArn=arn)
    return Outcome.REMOVED


def delete_load_balancer(arn: str, run_id: str) -> Outcome:
    if not _owned(_elb_tags(arn), run_id):
        return Outcome.REFUSED
    client("elbv2").delete_load_balancer(LoadBalancerArn=arn)
    return Outcome.REMOVED


def delete_target_group(arn: str, run_id: str) -> Outcome:
    if not _owned(_elb_tags(arn), run_id):
        return Outcome.REFUSED
    client("elbv2").delete_target_group(TargetGroupArn=arn)
    return Outcome.REMOVED


def delete_launch_template(template_id: str, run_id: str) -> Outcome:
    ec2 = client("ec2")
    templates = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"]
    if not templates:
        return Outcome.REMOVED
    if not _owned(tag_dict(templates[0].get("Tags")), run_id):
        return Outcome.REFUSED
    ec2.delete_launch_template(LaunchTemplateId=template_id)
    return Outcome.REMOVED


def delete_security_group(group_id: str, run_id: str) -> Outcome:
    ec2 = client("ec2")
    groups = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    if not groups:
        return Outcome.REMOVED
    if not _owned(tag_dict(groups[0].get("Tags")), run_id):
        return Outcome.REFUSED
    ec2.delete_security_group(GroupId=group_id)
    return Outcome.REMOVED


def terminate_instance(instance_id: str, run_id: str) -> Outcome:
    """An instance outside any group (its group is gone): the janitor's case, never the ledger's."""
    ec2 = client("ec2")
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    if not instances or instances[0]["State"]["Name"] == "terminated":
        return Outcome.REMOVED
    if not _owned(tag_dict(instances[0].get("Tags")), run_id):
        return Outcome.REFUSED
    ec2.terminate_instances(InstanceIds=[instance_id])
    return Outcome.REMOVED


DELETERS: dict[str, Callable[[str, str], Outcome]] = {
    "auto_scaling_group": delete_auto_scaling_group,
    "listener": delete_listener,
    "load_balancer": delete_load_balancer,
    "target_group": delete_target_group,
    "launch_template": delete_launch_template,
    "instance_security_group": delete_security_group,
    "alb_security_group": delete_security_group,
    # Found by the janitor's sweep through tags, where which group it was is unknown.
    "security_group": delete_security_group,
    "instance": terminate_instance,
}


def delete_owned(kind: str, physical_id: str, run_id: str) -> Outcome:
    """Delete one resource if it carries ``run_id``'s tag; what AWS is still releasing is PENDING."""
    try:
        return DELETERS[kind](physical_id, run_id)
    except _Gone:
        return Outcome.REMOVED
    except ClientError as exc:
        code = error_code(exc)
        if code in NOT_FOUND_CODES:
            return Outcome.REMOVED
        if code in STILL_RELEASING_CODES:
            logger.info("still releasing", extra={"kind": kind, "id": physical_id, "code": code})
            return Outcome.PENDING
        raise


def teardown_lab(run_id: str, table: RunTable, now: float | None = None) -> TeardownResult:
    """One teardown pass for ``run_id``: harmless to repeat, harmless for a run that made nothing."""
    now = time.time() if now is None else now
    logger.append_keys(run_id=run_id)
    record = table.load_run(run_id)
    if record is None:
        logger.info("no record of this run: nothing to tear down")
        return TeardownResult(done=True, removed=[], remaining=[], refused=[])

    removed: list[str] = []
    remaining: list[str] = []
    refused = [f"{kind}:{physical_id}" for kind, physical_id in record.refused.items()]
    unknown = sorted(set(record.resources) - set(TEARDOWN_ORDER))
    for kind in (*TEARDOWN_ORDER, *unknown):
        physical_id = record.resources.get(kind)
        if physical_id is None:
            continue
        if kind not in DELETERS:
            remaining.append(f"{kind}:{physical_id}")
            logger.error("ledger lists a kind teardown cannot delete", extra={"kind": kind})
            continue
        outcome = delete_owned(kind, physical_id, run_id)
        label = f"{kind}:{physical_id}"
        if outcome is Outcome.REMOVED:
            table.forget_resource(run_id, kind)
            removed.append(label)
        elif outcome is Outcome.REFUSED:
            logger.warning("refused: not tagged for this run", extra={"kind": kind, "id": physical_id})
            table.refuse_resource(run_id, kind, physical_id)
            refused.append(label)
        else:
            remaining.append(label)

    done = not remaining
    if done:
        if record.lab_name is not None:
            table.release_lock(record.lab_name, run_id)
        table.mark_torn_down(run_id, now)
    logger.info(
        "teardown pass",
        extra={"done": done, "removed": removed, "remaining": remaining, "refused": refused},
    )
    return TeardownResult(done=done, removed=removed, remaining=remaining, refused=refused)
