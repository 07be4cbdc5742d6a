"""Prepare: validate and default the run input, resolve subnets, take the lab's lock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from scalelab.contracts.base import parse_event
from scalelab.contracts.run import (
    ExpectationsConfig,
    LabConfig,
    PrepareEvent,
    RunConfig,
    RunInput,
    StressConfig,
    TimingConfig,
)
from scalelab.contracts.scaling import Scaling
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import (
    InstanceTypeNotOffered,
    InvalidInput,
    NoSubnets,
    ScalelabError,
    SubnetsUnusable,
)
from scalelab.core.naming import resource_names, run_id_from_execution, run_tags
from scalelab.core.observability import logger
from scalelab.core.settings import RunDefaults
from scalelab.store.runs import RunTable

# The key of the VPC's main route table in _default_routes, which a subnet uses when no
# route table is associated with it.
MAIN_ROUTE_TABLE = "main"


def prepare_run(
    event: PrepareEvent, table: RunTable, defaults: RunDefaults, now: float | None = None
) -> RunConfig:
    """Turn an execution's input into the run config every later state reads.

    Nothing is created in the account here. A rejected run still leaves a
    record saying why, so no execution goes unaccounted for.
    """
    now = time.time() if now is None else now
    run_id = run_id_from_execution(event.execution_name)
    logger.append_keys(run_id=run_id)
    lab_name: str | None = None
    try:
        run_input = parse_event(event.input, RunInput, "run input", context=defaults)
        lab_name = run_input.lab.name
        subnet_ids, vpc_id, dropped = resolve_subnets(run_input.lab.subnet_ids, run_input.lab.instance_type)
        if run_input.lab.launch_template is not None:
            check_launch_template_exists(run_input.lab.launch_template.name)
        config = build_run_config(run_id, run_input, subnet_ids, vpc_id, now, dropped_subnets=dropped)
        table.start_run(run_id, lab_name, config.model_dump(mode="json"), now, event.execution_name)
        table.acquire_lock(lab_name, run_id, defaults.lock_lease_seconds, now)
    except ScalelabError as exc:
        logger.warning("run rejected", extra={"reason": str(exc), "error": type(exc).__name__})
        table.reject_run(run_id, str(exc), now, lab_name, event.execution_name)
        raise
    logger.info("run prepared", extra={"lab": lab_name, "subnets": subnet_ids})
    return config


def build_run_config(
    run_id: str,
    run_input: RunInput,
    subnet_ids: list[str],
    vpc_id: str,
    now: float,
    *,
    dropped_subnets: dict[str, str] | None = None,
) -> RunConfig:
    lab = run_input.lab
    return RunConfig(
        run_id=run_id,
        lab=LabConfig(
            **lab.model_dump(exclude={"subnet_ids", "scaling"}),
            scaling=Scaling(**lab.scaling.model_dump()),
            subnet_ids=subnet_ids,
            vpc_id=vpc_id,
            dropped_subnets=dropped_subnets or {},
        ),
        stress=StressConfig(**run_input.stress.model_dump()),
        expectations=ExpectationsConfig(**run_input.expectations.model_dump()),
        timing=TimingConfig(**run_input.timing.model_dump()),
        names=resource_names(run_id),
        tags=run_tags(run_id, lab.name),
        started_at=utc_iso(now),
    )


def resolve_subnets(given: list[str], instance_type: str) -> tuple[list[str], str, dict[str, str]]:
    """The lab's subnets, their VPC, and the subnets left out with why: the given ones, else
    the default VPC's.

    What AWS would refuse or fail on later is refused here, before anything exists: an
    Application Load Balancer takes one subnet per availability zone and needs two zones of
    one VPC; a zone that does not offer the instance type cannot launch it (its subnets are
    left out); and an instance with no way to the internet never gets its app installed.
    """
    ec2 = client("ec2")
    where = "lab.subnet_ids" if given else "the default VPC's subnets"
    subnets = _given_subnets(ec2, given) if given else _default_subnets(ec2)
    zones = {subnet["AvailabilityZone"] for subnet in subnets}
    if len(zones) < 2:
        raise InvalidInput(
            "invalid run input: lab.subnet_ids: a load balancer needs subnets in at least two "
            f"availability zones, these are all in {', '.join(sorted(zones)) or 'none'}; "
            "add a subnet in another zone"
        )
    _one_per_zone(subnets, where)
    offered = offering_zones(ec2, instance_type, zones)
    dropped = {
        subnet["SubnetId"]: f"{subnet['AvailabilityZone']} does not offer {instance_type}"
        for subnet in subnets
        if subnet["AvailabilityZone"] not in offered
    }
    kept = [subnet for subnet in subnets if subnet["SubnetId"] not in dropped]
    if len(kept) < 2:
        found = f"only in {', '.join(sorted(offered))}" if offered else "in none"
        raise InstanceTypeNotOffered(
            f"instance type {instance_type} is offered {found} of the availability zones of "
            f"{where} ({', '.join(sorted(zones))}), and a load balancer needs two; pick another "
            "lab.instance_type, or subnets in zones that offer it (aws ec2 "
            "describe-instance-type-offerings --location-type availability-zone "
            f"--filters Name=instance-type,Values={instance_type})"
        )
    if dropped:
        logger.info("subnets left out", extra={"dropped_subnets": dropped})
    _reach_the_internet(ec2, kept, where)
    ordered = sorted(kept, key=lambda subnet: (subnet["AvailabilityZone"], subnet["SubnetId"]))
    return [subnet["SubnetId"] for subnet in ordered], ordered[0]["VpcId"], dropped


def _given_subnets(ec2: Any, given: list[str]) -> list[dict[str, Any]]:
    with _refused_as_input(
        "InvalidSubnetID",
        lambda exc: (
            f"lab.subnet_ids: {exc.response['Error']['Message']}; pass subnets that exist in this region"
        ),
    ):
        subnets: list[dict[str, Any]] = ec2.describe_subnets(SubnetIds=given)["Subnets"]
    vpcs = {subnet["VpcId"] for subnet in subnets}
    if len(vpcs) != 1:
        raise InvalidInput(
            "invalid run input: lab.subnet_ids: the subnets are in different VPCs "
            f"({', '.join(sorted(vpcs))}); pass subnets of one VPC"
        )
    return subnets


def _default_subnets(ec2: Any) -> list[dict[str, Any]]:
    default_vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not default_vpcs:
        raise NoSubnets(
            f"no lab.subnet_ids given and region {ec2.meta.region_name} has no default VPC; "
            "pass lab.subnet_ids (two or more subnets of one VPC in different availability "
            "zones) or set the DefaultSubnetIds Parameter"
        )
    pages = ec2.get_paginator("describe_subnets").paginate(
        Filters=[
            {"Name": "vpc-id", "Values": [default_vpcs[0]["VpcId"]]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )
    return [subnet for page in pages for subnet in page["Subnets"]]


def _one_per_zone(subnets: list[dict[str, Any]], where: str) -> None:
    """A load balancer takes one subnet per zone (CreateLoadBalancer refuses a second)."""
    by_zone: dict[str, list[str]] = {}
    for subnet in subnets:
        by_zone.setdefault(subnet["AvailabilityZone"], []).append(subnet["SubnetId"])
    twice = {zone: sorted(ids) for zone, ids in sorted(by_zone.items()) if len(ids) > 1}
    if twice:
        named = "; ".join(f"{' and '.join(ids)} are both in {zone}" for zone, ids in twice.items())
        raise SubnetsUnusable(
            f"{where}: {named}; a load balancer takes one subnet per availability zone, "
            "so pass one subnet of each zone"
        )


def offering_zones(ec2: Any, instance_type: str, zones: set[str]) -> set[str]:
    """Which of ``zones`` offer ``instance_type`` (DescribeInstanceTypeOfferings)."""
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone",
        Filters=[
            {"Name": "instance-type", "Values": [instance_type]},
            {"Name": "location", "Values": sorted(zones)},
        ],
    )
    return {offering["Location"] for page in pages for offering in page["InstanceTypeOfferings"]}


def _reach_the_internet(ec2: Any, subnets: list[dict[str, Any]], where: str) -> None:
    """Each subnet must give its instances a way out to the package repositories: a public
    IPv4 address on launch and a route to an internet gateway, or a route to a NAT gateway."""
    routes = _default_routes(ec2, subnets[0]["VpcId"])
    stranded = []
    for subnet in subnets:
        # A subnet with no route table of its own uses the VPC's main one.
        target = routes[subnet["SubnetId"]] if subnet["SubnetId"] in routes else routes.get(MAIN_ROUTE_TABLE)
        public = bool(subnet.get("MapPublicIpOnLaunch"))
        if target == "nat" or (target == "igw" and public):
            continue
        if target == "igw":
            why = (
                "no public IPv4 address on launch (MapPublicIpOnLaunch is off), so its route to "
                "an internet gateway is no way out"
            )
        elif public:
            why = "no route 0.0.0.0/0 to an internet gateway or NAT gateway in its route table"
        else:
            why = "no public IPv4 address on launch and no route 0.0.0.0/0 to a NAT gateway"
        stranded.append(f"{subnet['SubnetId']} ({subnet['AvailabilityZone']}: {why})")
    if stranded:
        raise SubnetsUnusable(
            f"{where}: {'; '.join(stranded)}. Instances there cannot reach the package "
            "repositories, so the app is never installed and its targets never turn healthy; "
            "pass public subnets (MapPublicIpOnLaunch on, a route 0.0.0.0/0 to an internet "
            "gateway) or private ones with a route 0.0.0.0/0 to a NAT gateway"
        )


def _default_routes(ec2: Any, vpc_id: str) -> dict[str, str | None]:
    """Where each route table of the VPC sends 0.0.0.0/0 ("igw", "nat", or None: nowhere),
    by the subnet it is associated with (MAIN_ROUTE_TABLE for the main one)."""
    pages = ec2.get_paginator("describe_route_tables").paginate(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
    )
    found: dict[str, str | None] = {}
    for page in pages:
        for table in page["RouteTables"]:
            target = _default_route_target(table.get("Routes", []))
            for association in table.get("Associations", []):
                if association.get("Main"):
                    found[MAIN_ROUTE_TABLE] = target
                elif "SubnetId" in association:
                    found[association["SubnetId"]] = target
    return found


def _default_route_target(routes: list[dict[str, Any]]) -> str | None:
    for route in routes:
        if route.get("DestinationCidrBlock") != "0.0.0.0/0" or route.get("State") == "blackhole":
            continue
        if route.get("NatGatewayId"):
            return "nat"
        if str(route.get("GatewayId", "")).startswith("igw-"):
            return "igw"
    return None


def check_launch_template_exists(name: str) -> None:
    with _refused_as_input(
        "InvalidLaunchTemplateName",
        lambda _: (
            f"lab.launch_template.name: no launch template named {name!r} "
            "in this region; create it first or leave lab.launch_template out"
        ),
    ):
        client("ec2").describe_launch_templates(LaunchTemplateNames=[name])


@contextmanager
def _refused_as_input(code_prefix: str, problem: Callable[[ClientError], str]) -> Iterator[None]:
    """AWS refusing what the input names (its error code starts with ``code_prefix``) is InvalidInput."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc).startswith(code_prefix):
            raise InvalidInput(f"invalid run input: {problem(exc)}") from None
        raise
