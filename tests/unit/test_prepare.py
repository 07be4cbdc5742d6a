"""Prepare: the run config, subnets, the lab lock and the run record, in the emulated account."""

from __future__ import annotations

import boto3
import pytest

from scalelab.core.errors import InvalidInput, LabBusy, NoSubnets
from scalelab.store.runs import RunTable
from tests.support.account import tagged_resources
from tests.unit.conftest import PrepareRun


def default_vpc_subnets() -> list[dict[str, str]]:
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    return ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]


def test_prepare_returns_a_complete_config_and_records_the_run(
    prepare: PrepareRun, run_table: RunTable
) -> None:
    config = prepare("nightly-0001")

    assert config.run_id == "nightly-0001"
    assert config.lab.name == "default"
    assert config.tags == {"scalelab:run": "nightly-0001", "scalelab:lab": "default"}
    assert config.names.auto_scaling_group == "scalelab-nightly-0001"
    assert sorted(config.lab.subnet_ids) == sorted(
        subnet["SubnetId"] for subnet in default_vpc_subnets() if subnet["DefaultForAz"]
    )
    assert config.lab.vpc_id == default_vpc_subnets()[0]["VpcId"]
    record = run_table.load_run("nightly-0001")
    assert record is not None
    assert record.status == "prepared"
    assert record.resources == {}
    assert run_table.lock_holder("default") == "nightly-0001"


def test_given_subnets_are_used(prepare: PrepareRun) -> None:
    chosen = [subnet["SubnetId"] for subnet in default_vpc_subnets()[:2]]

    config = prepare(run_input={"lab": {"subnet_ids": chosen}})

    assert sorted(config.lab.subnet_ids) == sorted(chosen)


def test_subnets_in_one_zone_are_rejected(prepare: PrepareRun) -> None:
    with pytest.raises(InvalidInput, match=r"lab\.subnet_ids: a load balancer needs subnets in at least two"):
        prepare(run_input={"lab": {"subnet_ids": [default_vpc_subnets()[0]["SubnetId"]]}})


def test_unknown_subnets_are_rejected(prepare: PrepareRun) -> None:
    with pytest.raises(InvalidInput, match=r"lab\.subnet_ids: .*exist"):
        prepare(run_input={"lab": {"subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]}})


def test_no_default_vpc_and_no_subnets_is_a_clear_error(prepare: PrepareRun, run_table: RunTable) -> None:
    ec2 = boto3.client("ec2")
    for subnet in default_vpc_subnets():
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    for vpc in ec2.describe_vpcs()["Vpcs"]:
        ec2.delete_vpc(VpcId=vpc["VpcId"])

    with pytest.raises(NoSubnets, match=r"no lab\.subnet_ids given and region us-east-1 has no default VPC"):
        prepare("no-vpc")

    assert run_table.lock_holder("default") is None
    record = run_table.load_run("no-vpc")
    assert record is not None
    assert record.status == "rejected"


def test_a_missing_user_launch_template_is_rejected(prepare: PrepareRun) -> None:
    with pytest.raises(InvalidInput, match=r"lab\.launch_template\.name: no launch template named 'mine'"):
        prepare(run_input={"lab": {"launch_template": {"name": "mine"}}})


def test_invalid_input_creates_nothing_but_keeps_a_record(prepare: PrepareRun, run_table: RunTable) -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare("bad-input", {"lab": {"max_size": 1, "desired_capacity": 2, "colour": "red"}})

    assert "lab.colour" in str(caught.value)
    assert run_table.lock_holder("default") is None
    assert tagged_resources("bad-input") == {}
    record = run_table.load_run("bad-input")
    assert record is not None
    assert record.status == "rejected"
    assert record.reason is not None
    assert "lab.colour" in record.reason


def test_a_second_run_of_a_busy_lab_fails_fast_and_names_the_active_run(
    prepare: PrepareRun, run_table: RunTable
) -> None:
    prepare("first-run")

    with pytest.raises(LabBusy, match=r"lab 'default' is in use by run 'first-run'"):
        prepare("second-run")

    assert run_table.lock_holder("default") == "first-run"
    second = run_table.load_run("second-run")
    assert second is not None
    assert second.status == "rejected"


def test_runs_of_different_labs_do_not_block_each_other(prepare: PrepareRun, run_table: RunTable) -> None:
    prepare("run-a", {"lab": {"name": "lab-a"}})
    prepare("run-b", {"lab": {"name": "lab-b"}})

    assert run_table.lock_holder("lab-a") == "run-a"
    assert run_table.lock_holder("lab-b") == "run-b"


def test_a_retried_prepare_of_the_same_run_succeeds(prepare: PrepareRun, run_table: RunTable) -> None:
    first = prepare("retried")
    second = prepare("retried")

    assert first.run_id == second.run_id
    assert run_table.lock_holder("default") == "retried"


def test_an_expired_lease_can_be_taken_over(run_table: RunTable) -> None:
    run_table.acquire_lock("default", "crashed-run", lease_seconds=60, now=1_000)

    run_table.acquire_lock("default", "next-run", lease_seconds=60, now=1_061)

    assert run_table.lock_holder("default") == "next-run"
