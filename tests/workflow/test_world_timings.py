"""The world's AWS timings: a load balancer provisions before it is active, and the world reads
what Provision configured off the resources it made (the model of the run's time on AWS uses it)."""

from __future__ import annotations

import time

import boto3
from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.world import LabSettings, World, scenario_named
from scalelab_rehearsal.world.timings import LOAD_BALANCER_ACTIVE_SECONDS

from scalelab.steps import provision
from tests.workflow.conftest import Rehearsal


def test_a_new_load_balancer_is_provisioning_until_its_time_to_turn_active_has_passed() -> None:
    # Slow enough that the provisioning lasts 2 real seconds.
    speed = LOAD_BALANCER_ACTIVE_SECONDS / 2
    with Emulator() as emulator, World(emulator, scenario_named("pass"), speed) as world:
        subnets = [subnet["SubnetId"] for subnet in boto3.client("ec2").describe_subnets()["Subnets"]][:2]
        elbv2 = boto3.client("elbv2")
        before = world.now()
        arn = elbv2.create_load_balancer(Name="scalelab-world-timings", Subnets=subnets)["LoadBalancers"][0][
            "LoadBalancerArn"
        ]

        def state() -> str:
            code: str = elbv2.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]["State"][
                "Code"
            ]
            return code

        assert state() == "provisioning"
        deadline = time.monotonic() + 20
        while state() != "active" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state() == "active"
        # moto keeps the creation time to the millisecond.
        assert world.now() - before >= LOAD_BALANCER_ACTIVE_SECONDS - 0.001 * speed


def test_the_world_reads_what_provision_configured(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run()

    assert outcome.passed, outcome.verdict
    assert rehearsal.world.lab_settings == LabSettings(
        health_check_interval=provision.HEALTH_CHECK_INTERVAL_SECONDS,
        healthy_threshold=provision.HEALTHY_THRESHOLD,
        deregistration_delay=provision.DEREGISTRATION_DELAY_SECONDS,
        instance_warmup=provision.INSTANCE_WARMUP_SECONDS,
    )
