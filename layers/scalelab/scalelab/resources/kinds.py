"""One registry of the resource kinds a run creates: order, ARN shape, tags, deletion.

Provision records kinds in creation order, teardown and the janitor delete in
the reverse (dependency) order, and the janitor maps Tagging API ARNs back to
kinds, all from this one table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from botocore.exceptions import ClientError

from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.core.aws import client, error_code
from scalelab.core.naming import RUN_TAG, run_of_load_execution, tag_dict

Tags = dict[str, str]


class Deletion(Enum):
    """What one deletion attempt achieved."""

    REMOVED = "removed"
    # AWS is still releasing it, or something it depends on: try again later.
    PENDING = "pending"
    # Not tagged for the run: left alone.
    REFUSED = "refused"


@dataclass(frozen=True)
class KindSpec:
    kind: Kind
    # The Resource Groups Tagging API's type, and the resource part of the ARN it lists
    # (``arn:aws:<service>:<region>:<account>:<arn_resource>/...``); None where the
    # janitor finds the kind through its own API instead.
    tagging_type: str | None
    arn_resource: str | None
    # Whether the ledger keeps the ARN (the load balancer's kinds) or the part after the type.
    id_is_arn: bool
    # The resource's tags, or None when it no longer exists.
    read_tags: Callable[[str], Tags | None]
    # Asks AWS to delete it.
    delete: Callable[[str], object]
    # Error codes meaning "it does not exist (any more)".
    not_found: frozenset[str]
    # Error codes meaning "AWS is still releasing something this depends on".
    still_releasing: frozenset[str]
    # False where AWS deletes in the background: the resource is gone once it no longer reads.
    deleted_at_once: bool = True


# ---- reading tags and deleting, per API -----------------------------------------------------


def _group_tags(name: str) -> Tags | None:
    groups = client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    found = groups["AutoScalingGroups"]
    return tag_dict(found[0].get("Tags")) if found else None


def _delete_group(name: str) -> None:
    autoscaling = client("autoscaling")
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if groups and groups[0].get("Status") != "Delete in progress":
        # ForceDelete terminates the instances with the group.
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)


def _instance_tags(instance_id: str) -> Tags | None:
    reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    if not instances or instances[0]["State"]["Name"] == "terminated":
        return None
    return tag_dict(instances[0].get("Tags"))


def elb_tags(arn: str) -> Tags | None:
    descriptions = client("elbv2").describe_tags(ResourceArns=[arn])["TagDescriptions"]
    return tag_dict(descriptions[0]["Tags"]) if descriptions else None


def _launch_template_tags(template_id: str) -> Tags | None:
    templates = client("ec2").describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"]
    return tag_dict(templates[0].get("Tags")) if templates else None


def _security_group_tags(group_id: str) -> Tags | None:
    groups = client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return tag_dict(groups[0].get("Tags")) if groups else None


# A load execution is stopped with this error, so its history says who stopped it.
LOAD_STOPPED_ERROR = "scalelab.LoadStopped"


def execution_name_of(arn: str) -> str:
    """``arn:aws:states:<region>:<account>:execution:<state machine>:<name>`` -> ``<name>``."""
    return arn.rsplit(":", 1)[-1]


def _load_execution_tags(arn: str) -> Tags | None:
    """Executions take no tags: a RUNNING one is the run's whose load name it carries; an ended
    one is gone, as far as teardown is concerned (it costs nothing more)."""
    described = client("stepfunctions").describe_execution(executionArn=arn)
    if described["status"] != "RUNNING":
        return None
    run_id = run_of_load_execution(execution_name_of(arn))
    return {RUN_TAG: run_id} if run_id else {}


def stop_load_execution(arn: str, cause: str = "the run's teardown stopped its load") -> None:
    client("stepfunctions").stop_execution(executionArn=arn, error=LOAD_STOPPED_ERROR, cause=cause)


# ---- the registry -----------------------------------------------------------------------------

_SECURITY_GROUP_NOT_FOUND = frozenset({"InvalidGroup.NotFound", "InvalidGroupId.Malformed"})
# A security group cannot be deleted while a network interface (an instance's, the load balancer's) uses it.
_SECURITY_GROUP_IN_USE = frozenset({"DependencyViolation"})


def _security_group(kind: Kind, tagging_type: str | None) -> KindSpec:
    return KindSpec(
        kind=kind,
        tagging_type=tagging_type,
        arn_resource="security-group" if tagging_type else None,
        id_is_arn=False,
        read_tags=_security_group_tags,
        delete=lambda group_id: client("ec2").delete_security_group(GroupId=group_id),
        not_found=_SECURITY_GROUP_NOT_FOUND,
        still_releasing=_SECURITY_GROUP_IN_USE,
    )


def _elb_kind(kind: Kind, arn_resource: str, delete: Callable[[str], object], not_found: str) -> KindSpec:
    return KindSpec(
        kind=kind,
        tagging_type=f"elasticloadbalancing:{arn_resource}",
        arn_resource=arn_resource,
        id_is_arn=True,
        read_tags=elb_tags,
        delete=delete,
        not_found=frozenset({not_found}),
        still_releasing=frozenset({"ResourceInUse"}),
    )


def _untagged_api_kind(
    kind: Kind,
    read_tags: Callable[[str], Tags | None],
    delete: Callable[[str], object],
    *,
    not_found: frozenset[str],
    still_releasing: frozenset[str],
    deleted_at_once: bool = True,
) -> KindSpec:
    """A kind the Tagging API does not list (the janitor finds it through its own API)."""
    return KindSpec(
        kind=kind,
        tagging_type=None,
        arn_resource=None,
        id_is_arn=False,
        read_tags=read_tags,
        delete=delete,
        not_found=not_found,
        still_releasing=still_releasing,
        deleted_at_once=deleted_at_once,
    )


# Dependency order for deletion: the group (and its instances) first, the security groups
# last, the instances' group before the load balancer's, which it references. Creation is
# the reverse.
TEARDOWN_ORDER: tuple[KindSpec, ...] = (
    # The load first: it would otherwise send into a load balancer being deleted.
    _untagged_api_kind(
        Kind.LOAD_EXECUTION,
        _load_execution_tags,
        stop_load_execution,
        not_found=frozenset({"ExecutionDoesNotExist"}),
        still_releasing=frozenset(),
    ),
    _untagged_api_kind(
        Kind.AUTO_SCALING_GROUP,
        _group_tags,
        _delete_group,
        not_found=frozenset(),
        still_releasing=frozenset({"ScalingActivityInProgress", "ResourceInUse", "ResourceInUseFault"}),
        # The group takes its instances with it, over minutes: gone once Auto Scaling no longer lists it.
        deleted_at_once=False,
    ),
    _untagged_api_kind(
        Kind.INSTANCE,
        _instance_tags,
        lambda instance_id: client("ec2").terminate_instances(InstanceIds=[instance_id]),
        not_found=frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}),
        still_releasing=frozenset(),
    ),
    _elb_kind(
        Kind.LISTENER,
        "listener",
        lambda arn: client("elbv2").delete_listener(ListenerArn=arn),
        "ListenerNotFound",
    ),
    _elb_kind(
        Kind.LOAD_BALANCER,
        "loadbalancer",
        lambda arn: client("elbv2").delete_load_balancer(LoadBalancerArn=arn),
        "LoadBalancerNotFound",
    ),
    _elb_kind(
        Kind.TARGET_GROUP,
        "targetgroup",
        lambda arn: client("elbv2").delete_target_group(TargetGroupArn=arn),
        "TargetGroupNotFound",
    ),
    KindSpec(
        kind=Kind.LAUNCH_TEMPLATE,
        tagging_type="ec2:launch-template",
        arn_resource="launch-template",
        id_is_arn=False,
        read_tags=_launch_template_tags,
        delete=lambda template_id: client("ec2").delete_launch_template(LaunchTemplateId=template_id),
        not_found=frozenset({"InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateId.Malformed"}),
        still_releasing=frozenset(),
    ),
    _security_group(Kind.INSTANCE_SECURITY_GROUP, None),
    # Listed by the Tagging API, where which of the two groups it is cannot be told.
    _security_group(Kind.SECURITY_GROUP, "ec2:security-group"),
    _security_group(Kind.ALB_SECURITY_GROUP, None),
)
KINDS: dict[Kind, KindSpec] = {spec.kind: spec for spec in TEARDOWN_ORDER}
_POSITION = {spec.kind: position for position, spec in enumerate(TEARDOWN_ORDER)}
# The Tagging API's types of what a run creates (instances and groups are listed through their own APIs).
TAGGED_TYPES = tuple(spec.tagging_type for spec in TEARDOWN_ORDER if spec.tagging_type)


def in_teardown_order(refs: Iterable[ResourceRef]) -> list[ResourceRef]:
    return sorted(refs, key=lambda ref: (_POSITION[ref.kind], ref.id))


def ref_of_arn(arn: str) -> ResourceRef | None:
    """The kind and ledger id of a Tagging API ARN, or None for a type a run does not create."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    service, resource = parts[2], parts[5]
    for spec in TEARDOWN_ORDER:
        if spec.tagging_type is None or spec.arn_resource is None:
            continue
        if f"{service}:{spec.arn_resource}" == spec.tagging_type and resource.startswith(
            f"{spec.arn_resource}/"
        ):
            physical_id = arn if spec.id_is_arn else resource.split("/", 1)[1]
            return ResourceRef(kind=spec.kind, id=physical_id)
    return None


def owned_by(tags: Tags, run_id: str) -> bool:
    return tags.get(RUN_TAG) == run_id


def delete_owned(ref: ResourceRef, run_id: str) -> Deletion:
    """Delete one resource if it carries ``run_id``'s tag; what AWS is still releasing is PENDING."""
    spec = KINDS[ref.kind]
    try:
        tags = spec.read_tags(ref.id)
        if tags is None:
            return Deletion.REMOVED
        if not owned_by(tags, run_id):
            return Deletion.REFUSED
        spec.delete(ref.id)
        gone = spec.deleted_at_once or spec.read_tags(ref.id) is None
        return Deletion.REMOVED if gone else Deletion.PENDING
    except ClientError as exc:
        code = error_code(exc)
        if code in spec.not_found:
            return Deletion.REMOVED
        if code in spec.still_releasing:
            return Deletion.PENDING
        raise
