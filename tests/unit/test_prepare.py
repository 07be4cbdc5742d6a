"""Prepare: the run config, subnets, the lab lock and the run record, in the emulated account."""

from __future__ import annotations

import boto3
import pytest
from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

from scalelab.core.errors import (
    InstanceTypeNotOffered,
    InvalidInput,
    LabBusy,
    NoSubnets,
    SubnetsUnusable,
)
from scalelab.store.runs import RunTable
from tests.support.account import tagged_resources
from tests.unit.conftest import PrepareRun


def default_vpc_subnets() -> list[dict[str, str]]:
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    return ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]


def default_subnet(zone: str) -> str:
    return next(
        subnet["SubnetId"]
        for subnet in default_vpc_subnets()
        if subnet["DefaultForAz"] and subnet["AvailabilityZone"] == zone
    )


def test_prepare_returns_a_complete_config_and_records_the_run(
    prepare: PrepareRun, run_table: RunTable
) -> None:
    config = prepare("nightly-0001")

    assert config.run_id == "nightly-0001"
    assert config.lab.name == "default"
    assert config.tags == {"scalelab:run": "nightly-0001", "scalelab:lab": "default"}
    assert config.names.auto_scaling_group == "scalelab-nightly-0001"
    # us-east-1e does not offer t3.micro (as in AWS): its subnet is left out, and the config says so.
    assert sorted(config.lab.subnet_ids) == sorted(
        subnet["SubnetId"]
        for subnet in default_vpc_subnets()
        if subnet["DefaultForAz"] and subnet["AvailabilityZone"] != "us-east-1e"
    )
    assert config.lab.dropped_subnets == {default_subnet("us-east-1e"): "us-east-1e does not offer t3.micro"}
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


# ---- the subnets' zones and their way to the internet ------------------------------------------


def new_vpc(cidr: str = "10.20.0.0/16") -> str:
    vpc_id: str = boto3.client("ec2").create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    return vpc_id


def new_subnet(vpc_id: str, cidr: str, zone: str, public_ip: bool = False) -> str:
    ec2 = boto3.client("ec2")
    subnet_id: str = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"][
        "SubnetId"
    ]
    if public_ip:
        ec2.modify_subnet_attribute(SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True})
    return subnet_id


def main_route_table(vpc_id: str) -> str:
    tables = boto3.client("ec2").describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"]
    table_id: str = tables[0]["RouteTableId"]
    return table_id


def internet_gateway(vpc_id: str) -> str:
    ec2 = boto3.client("ec2")
    gateway: str = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc_id)
    return gateway


def nat_gateway(vpc_id: str) -> str:
    """A NAT gateway in a public subnet of the VPC (which routes to an internet gateway)."""
    ec2 = boto3.client("ec2")
    public_table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(
        RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=internet_gateway(vpc_id)
    )
    public = new_subnet(vpc_id, "10.20.100.0/24", "us-east-1a", public_ip=True)
    ec2.associate_route_table(RouteTableId=public_table, SubnetId=public)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat: str = ec2.create_nat_gateway(SubnetId=public, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    return nat


def test_two_subnets_in_one_zone_are_refused_naming_both(prepare: PrepareRun, run_table: RunTable) -> None:
    vpc = default_vpc_subnets()[0]["VpcId"]
    second = new_subnet(vpc, "172.31.128.0/20", "us-east-1a", public_ip=True)
    first = default_subnet("us-east-1a")

    with pytest.raises(SubnetsUnusable) as caught:
        prepare("same-zone", {"lab": {"subnet_ids": [first, second, default_subnet("us-east-1b")]}})

    message = str(caught.value)
    assert message.startswith("lab.subnet_ids: ")
    assert f"{' and '.join(sorted([first, second]))} are both in us-east-1a" in message
    assert "one subnet per availability zone" in message
    assert run_table.lock_holder("default") is None
    assert tagged_resources("same-zone") == {}


def test_private_subnets_without_a_nat_gateway_are_refused_naming_them(
    prepare: PrepareRun, run_table: RunTable
) -> None:
    vpc = new_vpc()
    private = [new_subnet(vpc, "10.20.1.0/24", "us-east-1a"), new_subnet(vpc, "10.20.2.0/24", "us-east-1b")]

    with pytest.raises(SubnetsUnusable) as caught:
        prepare("private", {"lab": {"subnet_ids": private}})

    message = str(caught.value)
    for subnet in private:
        assert subnet in message
    assert "no public IPv4 address on launch and no route 0.0.0.0/0 to a NAT gateway" in message
    assert "cannot reach the package repositories" in message
    assert "a route 0.0.0.0/0 to a NAT gateway" in message
    record = run_table.load_run("private")
    assert record is not None
    assert record.status == "rejected"
    assert run_table.lock_holder("default") is None


def test_private_subnets_with_a_route_to_a_nat_gateway_are_used(prepare: PrepareRun) -> None:
    ec2 = boto3.client("ec2")
    vpc = new_vpc()
    private_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(
        RouteTableId=private_table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat_gateway(vpc)
    )
    private = [new_subnet(vpc, "10.20.1.0/24", "us-east-1b"), new_subnet(vpc, "10.20.2.0/24", "us-east-1c")]
    for subnet in private:
        ec2.associate_route_table(RouteTableId=private_table, SubnetId=subnet)

    config = prepare(run_input={"lab": {"subnet_ids": private}})

    assert sorted(config.lab.subnet_ids) == sorted(private)
    assert config.lab.vpc_id == vpc


def test_public_subnets_use_the_main_route_tables_internet_gateway(prepare: PrepareRun) -> None:
    ec2 = boto3.client("ec2")
    vpc = new_vpc()
    ec2.create_route(
        RouteTableId=main_route_table(vpc), DestinationCidrBlock="0.0.0.0/0", GatewayId=internet_gateway(vpc)
    )
    public = [
        new_subnet(vpc, "10.20.1.0/24", "us-east-1a", public_ip=True),
        new_subnet(vpc, "10.20.2.0/24", "us-east-1b", public_ip=True),
    ]

    config = prepare(run_input={"lab": {"subnet_ids": public}})

    assert sorted(config.lab.subnet_ids) == sorted(public)


def test_a_route_to_an_internet_gateway_without_public_addresses_is_no_way_out(prepare: PrepareRun) -> None:
    ec2 = boto3.client("ec2")
    vpc = new_vpc()
    ec2.create_route(
        RouteTableId=main_route_table(vpc), DestinationCidrBlock="0.0.0.0/0", GatewayId=internet_gateway(vpc)
    )
    public = new_subnet(vpc, "10.20.1.0/24", "us-east-1a", public_ip=True)
    no_address = new_subnet(vpc, "10.20.2.0/24", "us-east-1b")

    with pytest.raises(SubnetsUnusable) as caught:
        prepare(run_input={"lab": {"subnet_ids": [public, no_address]}})

    message = str(caught.value)
    assert (
        f"{no_address} (us-east-1b: no public IPv4 address on launch (MapPublicIpOnLaunch is off)" in message
    )
    assert public not in message


def test_a_subnets_own_route_table_overrides_the_main_one(prepare: PrepareRun) -> None:
    ec2 = boto3.client("ec2")
    vpc = new_vpc()
    ec2.create_route(
        RouteTableId=main_route_table(vpc), DestinationCidrBlock="0.0.0.0/0", GatewayId=internet_gateway(vpc)
    )
    isolated_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    public = new_subnet(vpc, "10.20.1.0/24", "us-east-1a", public_ip=True)
    isolated = new_subnet(vpc, "10.20.2.0/24", "us-east-1b", public_ip=True)
    ec2.associate_route_table(RouteTableId=isolated_table, SubnetId=isolated)

    with pytest.raises(SubnetsUnusable) as caught:
        prepare(run_input={"lab": {"subnet_ids": [public, isolated]}})

    message = str(caught.value)
    assert f"{isolated} (us-east-1b: no route 0.0.0.0/0 to an internet gateway or NAT gateway" in message
    assert public not in message


def test_a_zone_without_the_type_leaves_too_few_zones(prepare: PrepareRun, run_table: RunTable) -> None:
    chosen = [default_subnet("us-east-1a"), default_subnet("us-east-1e")]

    with pytest.raises(InstanceTypeNotOffered) as caught:
        prepare("one-zone-left", {"lab": {"subnet_ids": chosen}})

    assert str(caught.value).startswith(
        "instance type t3.micro is offered only in us-east-1a of the availability zones of "
        "lab.subnet_ids (us-east-1a, us-east-1e), and a load balancer needs two"
    )
    assert run_table.lock_holder("default") is None


def test_an_instance_type_no_chosen_zone_offers_is_refused_naming_type_and_zones(
    prepare: PrepareRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The account's offerings without m7i.large in us-east-1a and us-east-1b.
    offerings = INSTANCE_TYPE_OFFERINGS["availability-zone"]
    monkeypatch.setitem(
        offerings,
        "us-east-1",
        [
            offering
            for offering in offerings["us-east-1"]
            if not (
                offering["InstanceType"] == "m7i.large"
                and offering["Location"] in {"us-east-1a", "us-east-1b"}
            )
        ],
    )
    chosen = [default_subnet("us-east-1a"), default_subnet("us-east-1b")]

    with pytest.raises(InstanceTypeNotOffered) as caught:
        prepare(run_input={"lab": {"subnet_ids": chosen, "instance_type": "m7i.large"}})

    message = str(caught.value)
    assert message.startswith(
        "instance type m7i.large is offered in none of the availability zones of lab.subnet_ids "
        "(us-east-1a, us-east-1b)"
    )
    assert "pick another lab.instance_type" in message
    # The same subnets with a type their zones offer are accepted.
    assert prepare(run_input={"lab": {"subnet_ids": chosen, "instance_type": "c7i.large"}}).lab.subnet_ids
