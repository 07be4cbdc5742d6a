"""Finding resources by their run tag, whatever any ledger says (the janitor's sweep, the tests' leftovers).

Each kind is listed through its own API (``live``); the janitor also asks the
Resource Groups Tagging API for the kinds it covers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.core.aws import client
from scalelab.core.naming import RUN_TAG, tag_dict
from scalelab.resources.kinds import TAGGED_TYPES, Tags, ref_of_arn

LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
# Builds a boto3 client for a service: scalelab's own, or (in tests) an independent one.
Clients = Callable[[str], Any]


def _groups(clients: Clients) -> Iterator[tuple[str, Tags]]:
    for page in clients("autoscaling").get_paginator("describe_auto_scaling_groups").paginate():
        for group in page["AutoScalingGroups"]:
            yield group["AutoScalingGroupName"], tag_dict(group.get("Tags"))


def _instances(clients: Clients) -> Iterator[tuple[str, Tags]]:
    pages = (
        clients("ec2")
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}])
    )
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                yield instance["InstanceId"], tag_dict(instance.get("Tags"))


def _security_groups(clients: Clients) -> Iterator[tuple[str, Tags]]:
    for page in clients("ec2").get_paginator("describe_security_groups").paginate():
        for group in page["SecurityGroups"]:
            # Every VPC has its own "default" group; no run makes one.
            if group["GroupName"] != "default":
                yield group["GroupId"], tag_dict(group.get("Tags"))


def _launch_templates(clients: Clients) -> Iterator[tuple[str, Tags]]:
    for page in clients("ec2").get_paginator("describe_launch_templates").paginate():
        for template in page["LaunchTemplates"]:
            yield template["LaunchTemplateId"], tag_dict(template.get("Tags"))


def _with_elb_tags(clients: Clients, arns: list[str]) -> Iterator[tuple[str, Tags]]:
    elbv2 = clients("elbv2")
    for start in range(0, len(arns), ELB_TAGS_BATCH):
        for description in elbv2.describe_tags(ResourceArns=arns[start : start + ELB_TAGS_BATCH])[
            "TagDescriptions"
        ]:
            yield description["ResourceArn"], tag_dict(description["Tags"])


def _load_balancer_arns(clients: Clients) -> list[str]:
    pages = clients("elbv2").get_paginator("describe_load_balancers").paginate()
    return [lb["LoadBalancerArn"] for page in pages for lb in page["LoadBalancers"]]


def _load_balancers(clients: Clients) -> Iterator[tuple[str, Tags]]:
    yield from _with_elb_tags(clients, _load_balancer_arns(clients))


def _listeners(clients: Clients) -> Iterator[tuple[str, Tags]]:
    elbv2 = clients("elbv2")
    arns = [
        listener["ListenerArn"]
        for lb in _load_balancer_arns(clients)
        for page in elbv2.get_paginator("describe_listeners").paginate(LoadBalancerArn=lb)
        for listener in page["Listeners"]
    ]
    yield from _with_elb_tags(clients, arns)


def _target_groups(clients: Clients) -> Iterator[tuple[str, Tags]]:
    pages = clients("elbv2").get_paginator("describe_target_groups").paginate()
    arns = [group["TargetGroupArn"] for page in pages for group in page["TargetGroups"]]
    yield from _with_elb_tags(clients, arns)


# DescribeTags takes at most 20 ARNs.
ELB_TAGS_BATCH = 20
# Every live resource of a kind, with its tags, through the kind's own API. The two
# security groups of a run are listed as SECURITY_GROUP: the API cannot tell which is which.
LIVE: dict[Kind, Callable[[Clients], Iterator[tuple[str, Tags]]]] = {
    Kind.AUTO_SCALING_GROUP: _groups,
    Kind.INSTANCE: _instances,
    Kind.LISTENER: _listeners,
    Kind.LOAD_BALANCER: _load_balancers,
    Kind.TARGET_GROUP: _target_groups,
    Kind.LAUNCH_TEMPLATE: _launch_templates,
    Kind.SECURITY_GROUP: _security_groups,
}
# What the janitor lists through the kinds' own APIs: what the Tagging API leaves out
# (instances and groups), and EC2's types again (its coverage of them has varied).
SWEPT_DIRECTLY = (Kind.AUTO_SCALING_GROUP, Kind.INSTANCE, Kind.SECURITY_GROUP, Kind.LAUNCH_TEMPLATE)


def live_resources(
    kinds: tuple[Kind, ...] = tuple(LIVE), clients: Clients = client
) -> Iterator[tuple[ResourceRef, Tags]]:
    """Every live resource of ``kinds`` in the region, with its tags, whoever made it."""
    for kind in kinds:
        for physical_id, tags in LIVE[kind](clients):
            yield ResourceRef(kind=kind, id=physical_id), tags


def _tagging_api() -> Iterator[tuple[ResourceRef, Tags]]:
    pages = (
        client("resourcegroupstaggingapi")
        .get_paginator("get_resources")
        .paginate(TagFilters=[{"Key": RUN_TAG}], ResourceTypeFilters=list(TAGGED_TYPES))
    )
    for page in pages:
        for mapping in page["ResourceTagMappingList"]:
            ref = ref_of_arn(mapping["ResourceARN"])
            if ref is not None:
                yield ref, tag_dict(mapping.get("Tags"))


def tagged_by_run() -> dict[str, set[ResourceRef]]:
    """Every resource tagged ``scalelab:run`` in the region, by run id (the janitor's sweep)."""
    found: dict[str, set[ResourceRef]] = defaultdict(set)
    for ref, tags in (*_tagging_api(), *live_resources(SWEPT_DIRECTLY)):
        run_id = tags.get(RUN_TAG)
        if run_id:
            found[run_id].add(ref)
    return dict(found)
