"""Prepare: validate and default the run input, resolve subnets, take the lab's lock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import InvalidInput, NoSubnets, ScalelabError
from scalelab.core.naming import resource_names, run_id_from_execution, run_tags
from scalelab.core.observability import logger
from scalelab.core.settings import RunDefaults
from scalelab.store.runs import RunTable


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
        subnet_ids, vpc_id = resolve_subnets(run_input.lab.subnet_ids)
        if run_input.lab.launch_template is not None:
            check_launch_template_exists(run_input.lab.launch_template.name)
        config = build_run_config(run_id, run_input, subnet_ids, vpc_id, now)
        table.start_run(run_id, lab_name, config.model_dump(mode="json"), now, event.execution_name)
        table.acquire_lock(lab_name, run_id, defaults.lock_lease_seconds, now)
    except ScalelabError as exc:
        logger.warning("run rejected", extra={"reason": str(exc), "error": type(exc).__name__})
        table.reject_run(run_id, str(exc), now, lab_name, event.execution_name)
        raise
    logger.info("run prepared", extra={"lab": lab_name, "subnets": subnet_ids})
    return config


def build_run_config(
    run_id: str, run_input: RunInput, subnet_ids: list[str], vpc_id: str, now: float
) -> RunConfig:
    lab = run_input.lab
    return RunConfig(
        run_id=run_id,
        lab=LabConfig(**lab.model_dump(exclude={"subnet_ids"}), subnet_ids=subnet_ids, vpc_id=vpc_id),
        stress=StressConfig(**run_input.stress.model_dump()),
        expectations=ExpectationsConfig(**run_input.expectations.model_dump()),
        timing=TimingConfig(**run_input.timing.model_dump()),
        names=resource_names(run_id),
        tags=run_tags(run_id, lab.name),
        started_at=utc_iso(now),
    )


def resolve_subnets(given: list[str]) -> tuple[list[str], str]:
    """The lab's subnets and their VPC: the given ones, else the default VPC's.

    An Application Load Balancer needs subnets in at least two availability
    zones of one VPC, so that is checked here, before anything exists.
    """
    ec2 = client("ec2")
    if given:
        with _refused_as_input(
            "InvalidSubnetID",
            lambda exc: (
                f"lab.subnet_ids: {exc.response['Error']['Message']}; pass subnets that exist in this region"
            ),
        ):
            subnets = ec2.describe_subnets(SubnetIds=given)["Subnets"]
        vpcs = {subnet["VpcId"] for subnet in subnets}
        if len(vpcs) != 1:
            raise InvalidInput(
                "invalid run input: lab.subnet_ids: the subnets are in different VPCs "
                f"({', '.join(sorted(vpcs))}); pass subnets of one VPC"
            )
    else:
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
        subnets = [subnet for page in pages for subnet in page["Subnets"]]
    zones = {subnet["AvailabilityZone"] for subnet in subnets}
    if len(zones) < 2:
        raise InvalidInput(
            "invalid run input: lab.subnet_ids: a load balancer needs subnets in at least two "
            f"availability zones, these are all in {', '.join(sorted(zones)) or 'none'}; "
            "add a subnet in another zone"
        )
    ordered = sorted(subnets, key=lambda subnet: (subnet["AvailabilityZone"], subnet["SubnetId"]))
    return [subnet["SubnetId"] for subnet in ordered], ordered[0]["VpcId"]


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
