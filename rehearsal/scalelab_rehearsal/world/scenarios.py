"""The scenarios: the ways the world misbehaves on purpose. Each flag is played by one part of the world."""

from __future__ import annotations

from dataclasses import dataclass

# How long "slow-scale-out"'s launch takes once the alarm fired: a day of the
# world's clock, past the rehearsal's deadline at any speed up to 14 000.
SLOW_SCALE_OUT_DELAY_SECONDS = 86400.0

# What Auto Scaling does after a scale-out launch failed (scaling.py).
AFTER_FAILURE_NOTHING = "nothing"  # no other launch before the deadline
AFTER_FAILURE_OTHER_ZONE = "other-zone"  # balanced-best-effort: it launches in another zone at once
AFTER_FAILURE_RETRY = "retry"  # it tries again, backing off, and fails the same way each time

# EC2's status messages of the failed launches (Amazon EC2 Auto Scaling User Guide,
# "Troubleshoot Amazon EC2 Auto Scaling: EC2 instance launch failures").
CAPACITY_ERROR = (
    "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested "
    "(us-east-1a). Our system will be working on provisioning additional capacity. You can currently "
    "get t3.micro capacity by not specifying an Availability Zone in your request or choosing "
    "us-east-1b, us-east-1c, us-east-1d, us-east-1f. Launching EC2 instance failed."
)
UNSUPPORTED_ERROR = (
    "Your requested instance type (t3.micro) is not supported in your requested Availability Zone "
    "(us-east-1a). Please retry your request by not specifying an Availability Zone or choosing "
    "us-east-1b, us-east-1c, us-east-1d, us-east-1f. Launching EC2 instance failed."
)
VCPU_LIMIT = 32  # the account's "Running On-Demand Standard instances" quota, in vCPUs
VCPU_LIMIT_ERROR = (
    f"You have requested more vCPU capacity than your current vCPU limit of {VCPU_LIMIT} allows for "
    "the instance bucket that the specified instance type belongs to. Please visit "
    "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. "
    "Launching EC2 instance failed."
)

# What the SSM agent reports when it cannot run the command's script: the script it writes under
# /var/lib/amazon/ssm is not executable (a noexec mount), so the shell exits 126 and the agent adds
# its own line (Systems Manager User Guide, "Understanding command statuses": Failed, a
# non-zero result code).
STRESS_SCRIPT_DENIED = (
    "/bin/sh: /var/lib/amazon/ssm/{instance_id}/document/orchestration/{command_id}/awsrunShellScript/"
    "0.awsrunShellScript/_script.sh: Permission denied\n"
    "failed to run commands: exit status 126\n"
)
STRESS_SCRIPT_DENIED_EXIT = 126

# Requests per target per minute: LoadRequestsPerSecondCap's default (100/s) over the default
# 2 instances is 3,000 per target per minute, under this.
TOO_HIGH_REQUEST_TARGET = 5000.0

# The emulated account a scenario's run needs (account.py), and what its run input names.
ACCOUNT_PRIVATE_SUBNETS = "private-subnets"  # two subnets, no public IPv4, no NAT
ACCOUNT_TWO_SUBNETS_IN_A_ZONE = "two-subnets-in-a-zone"  # the default VPC's, and a second one in us-east-1a
ACCOUNT_TYPE_OFFERED_NOWHERE = "type-offered-nowhere"  # m7i.large not offered in us-east-1a and us-east-1b


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    targets_become_healthy: bool = True  # health.py
    stress_raises_cpu: bool = True  # stress.py
    stress_fails: bool = False  # stress.py: every invocation of the stress command ends Failed
    app_crashing: bool = False  # front_door.py: one instance's app answers the load balancer 502
    launch_error: str = ""  # scaling.py: the status message of the scale-out's failed launch
    after_failure: str = AFTER_FAILURE_NOTHING  # scaling.py
    launch_delay: float = 0.0  # scaling.py
    replaces_an_instance: bool = False  # scaling.py
    loses_events: bool = False  # scaling.py
    # scaling.py: the policy's AlarmLow acts. Off elsewhere: on the world's clock its 15 minutes pass
    # in a quarter of a real second, and would undo a scale-out before anyone looked at it.
    scales_in: bool = False
    expects_scale_in: bool = False  # __init__.py: the run input sets expectations.scale_in_within_seconds
    api_fault_rate: float = 0.0  # faults.py
    account: str = ""  # account.py
    # __init__.py: the run input's lab.scaling ({} keeps the default, cpu at CpuTargetPercent).
    scaling: tuple[tuple[str, object], ...] = ()


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("pass", "everything works: healthy, spread, scales out under stress"),
        Scenario("never-healthy", "the app never answers health checks", targets_become_healthy=False),
        Scenario(
            "no-scale-out", "stress does not raise CPU, so the group never scales", stress_raises_cpu=False
        ),
        Scenario(
            "probe-fails",
            "one instance's app keeps crashing and restarting: the load balancer answers 502 for "
            "the requests it sends there, while its health checks still pass",
            app_crashing=True,
        ),
        Scenario(
            "stress-never-runs",
            "the SSM command fails on every instance (its script may not run: exit status 126), so "
            "the CPU stays idle and the group never scales",
            stress_fails=True,
        ),
        Scenario(
            "launch-fails",
            "the scale-out launch fails with an EC2 capacity error",
            launch_error=CAPACITY_ERROR,
        ),
        Scenario(
            "zone-lacks-type",
            "the scale-out launch in one zone fails: it does not offer the instance type; "
            "Auto Scaling launches in another zone",
            launch_error=UNSUPPORTED_ERROR,
            after_failure=AFTER_FAILURE_OTHER_ZONE,
        ),
        Scenario(
            "vcpu-limit",
            "the account's vCPU quota is reached: every scale-out launch fails",
            launch_error=VCPU_LIMIT_ERROR,
            after_failure=AFTER_FAILURE_RETRY,
        ),
        Scenario(
            "events-lost",
            "EventBridge loses the Auto Scaling events (it delivers best effort); the group's "
            "scaling activities show the scale-out",
            loses_events=True,
        ),
        Scenario(
            "private-subnets",
            "the lab's subnets give instances no public IPv4 address and have no NAT gateway",
            account=ACCOUNT_PRIVATE_SUBNETS,
        ),
        Scenario(
            "two-subnets-in-a-zone",
            "the lab's subnets include two in one availability zone",
            account=ACCOUNT_TWO_SUBNETS_IN_A_ZONE,
        ),
        Scenario(
            "type-offered-nowhere",
            "the instance type is offered in none of the lab's subnets' zones",
            account=ACCOUNT_TYPE_OFFERED_NOWHERE,
        ),
        Scenario(
            "replacement-under-stress",
            "an instance fails its health checks under the stress and is replaced (no scale-out)",
            stress_raises_cpu=False,
            replaces_an_instance=True,
        ),
        Scenario(
            "slow-scale-out",
            "the alarm fires, but the launch completes only after the deadline",
            launch_delay=SLOW_SCALE_OUT_DELAY_SECONDS,
        ),
        Scenario(
            "scale-in",
            "the run waits for the scale-in: once the load stopped, target tracking's scale-in alarm "
            "brings the group back to its starting capacity",
            scales_in=True,
            expects_scale_in=True,
        ),
        Scenario(
            "scale-in-never",
            "the run waits for the scale-in, but the group stays up: its policy never scales in",
            expects_scale_in=True,
        ),
        Scenario(
            "request-count",
            "the group scales on ALBRequestCountPerTarget: the load generator's requests through the "
            "load balancer take it over the target",
            scaling=(("metric", "request_count"),),
        ),
        Scenario(
            "network-out",
            "the group scales on ASGAverageNetworkOut: the load generator downloads from the app "
            "through the load balancer",
            scaling=(("metric", "network_out"),),
        ),
        Scenario(
            "network-in",
            "the group scales on ASGAverageNetworkIn: the load generator uploads to the app "
            "through the load balancer",
            scaling=(("metric", "network_in"),),
        ),
        Scenario(
            "target-too-high",
            "the group scales on request count, with a target the capped load cannot reach: "
            "LoadRequestsPerSecondCap keeps it under the target, and the group never scales",
            scaling=(("metric", "request_count"), ("target", TOO_HIGH_REQUEST_TARGET)),
        ),
        Scenario(
            "flaky-api",
            "a seeded 10 % of the handlers' AWS calls answer throttling or 503; retries absorb them",
            api_fault_rate=0.10,
        ),
    )
}


class UnknownScenario(ValueError):
    pass


def scenario_named(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise UnknownScenario(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]
