"""The emulated account as a scenario's run needs it, and the run input that names what it made.

Some failure modes are the account's, not AWS's behaviour during the run: subnets with no way to
the internet, a second subnet in a zone, an instance type the zones do not offer. Each is made here
before the run starts, with the calls a person would make (or, for EC2's instance type offerings,
which no API call changes, in moto's data), and undone when the world stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

from scalelab_rehearsal.emulator import REGION, Emulator
from scalelab_rehearsal.world.scenarios import (
    ACCOUNT_PRIVATE_SUBNETS,
    ACCOUNT_TWO_SUBNETS_IN_A_ZONE,
    ACCOUNT_TYPE_OFFERED_NOWHERE,
    Scenario,
)

PRIVATE_VPC_CIDR = "10.20.0.0/16"
PRIVATE_SUBNETS = {"us-east-1a": "10.20.1.0/24", "us-east-1b": "10.20.2.0/24"}
# Outside the default VPC's default subnets (172.31.0.0/20 to 172.31.80.0/20).
SECOND_SUBNET_CIDR = "172.31.128.0/20"
SECOND_SUBNET_ZONE = "us-east-1a"
# An allowed instance type that the account's us-east-1a and us-east-1b do not offer, as when
# a new generation has not reached an account's older zones yet.
UNOFFERED_TYPE = "m7i.large"
UNOFFERED_ZONES = ("us-east-1a", "us-east-1b")


class Account:
    """The scenario's account set-up, and ``run_input``: what the run must name to use it."""

    def __init__(self, emulator: Emulator, scenario: Scenario) -> None:
        self.emulator = emulator
        self.scenario = scenario
        self.run_input: dict[str, Any] = {}

    def install(self) -> Callable[[], None]:
        """Make the scenario's account; returns the undo."""
        make = {
            ACCOUNT_PRIVATE_SUBNETS: self._private_subnets,
            ACCOUNT_TWO_SUBNETS_IN_A_ZONE: self._two_subnets_in_a_zone,
            ACCOUNT_TYPE_OFFERED_NOWHERE: self._type_offered_nowhere,
        }.get(self.scenario.account)
        return make() if make is not None else lambda: None

    @property
    def _ec2(self) -> Any:
        return self.emulator.client("ec2")

    def _default_subnet(self, zone: str) -> str:
        subnets = self._ec2.describe_subnets(
            Filters=[
                {"Name": "default-for-az", "Values": ["true"]},
                {"Name": "availability-zone", "Values": [zone]},
            ]
        )["Subnets"]
        subnet_id: str = subnets[0]["SubnetId"]
        return subnet_id

    def _private_subnets(self) -> Callable[[], None]:
        """A VPC with no internet gateway and no NAT gateway, and a subnet in two of its zones
        that gives instances no public IPv4 address (a new subnet's MapPublicIpOnLaunch is off)."""
        vpc = self._ec2.create_vpc(CidrBlock=PRIVATE_VPC_CIDR)["Vpc"]["VpcId"]
        subnets = [
            self._ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
            for zone, cidr in PRIVATE_SUBNETS.items()
        ]
        self.run_input = {"lab": {"subnet_ids": subnets}}

        def undo() -> None:
            for subnet in subnets:
                self._ec2.delete_subnet(SubnetId=subnet)
            self._ec2.delete_vpc(VpcId=vpc)

        return undo

    def _two_subnets_in_a_zone(self) -> Callable[[], None]:
        """A second public subnet in one of the default VPC's zones, named with that zone's default
        subnet and another zone's."""
        vpc = self._ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0][
            "VpcId"
        ]
        second = self._ec2.create_subnet(
            VpcId=vpc, CidrBlock=SECOND_SUBNET_CIDR, AvailabilityZone=SECOND_SUBNET_ZONE
        )["Subnet"]["SubnetId"]
        self._ec2.modify_subnet_attribute(SubnetId=second, MapPublicIpOnLaunch={"Value": True})
        self.run_input = {
            "lab": {
                "subnet_ids": [
                    self._default_subnet(SECOND_SUBNET_ZONE),
                    second,
                    self._default_subnet("us-east-1b"),
                ]
            }
        }
        return lambda: self._ec2.delete_subnet(SubnetId=second)

    def _type_offered_nowhere(self) -> Callable[[], None]:
        """EC2's offerings without UNOFFERED_TYPE in UNOFFERED_ZONES; the run asks for it there."""
        offerings = INSTANCE_TYPE_OFFERINGS["availability-zone"]
        original = offerings[REGION]
        offerings[REGION] = [
            offering
            for offering in original
            if not (offering["InstanceType"] == UNOFFERED_TYPE and offering["Location"] in UNOFFERED_ZONES)
        ]
        self.run_input = {
            "lab": {
                "instance_type": UNOFFERED_TYPE,
                "subnet_ids": [self._default_subnet(zone) for zone in UNOFFERED_ZONES],
            }
        }

        def undo() -> None:
            offerings[REGION] = original

        return undo
