"""Instances, their targets' health, and the load balancer's provisioning.

An instance boots and its user data starts the app in about ``BOOT_SECONDS``;
the load balancer is ``provisioning`` for ``LOAD_BALANCER_ACTIVE_SECONDS``
after it was created, and checks no target before it is ``active``; the target
group then needs its ``HealthyThresholdCount`` consecutive passing checks
``HealthCheckIntervalSeconds`` apart (as Provision configured the group), so a
target is ``initial`` until then, then ``healthy``. moto's own answer is
corrected where it says ``healthy`` or ``active``.

What Provision configured (the health check, the deregistration delay, the
group's instance warm-up) is noted in ``LabSettings`` as the world sees it: the
model of the run's time on AWS reads it there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moto.autoscaling.responses import AutoScalingResponse
from moto.ec2.models import ec2_backends
from moto.elbv2.models import FakeHealthStatus, FakeLoadBalancer, FakeTargetGroup, elbv2_backends

from scalelab_rehearsal.emulator import ACCOUNT, REGION
from scalelab_rehearsal.world.clock import Clock
from scalelab_rehearsal.world.scenarios import Scenario
from scalelab_rehearsal.world.timings import (
    INSTANCE_BOOT_SECONDS,
    LOAD_BALANCER_ACTIVE_SECONDS,
    USER_DATA_SECONDS,
    healthy_after,
)

# From launch until the app answers on its port, in simulated seconds.
BOOT_SECONDS = INSTANCE_BOOT_SECONDS + USER_DATA_SECONDS
# AWS's own defaults (CreateTargetGroup for HTTP, the target group attribute), where a
# run never made a target group to read them from.
HEALTH_INTERVAL_SECONDS = 30.0
HEALTHY_THRESHOLD = 5
DEREGISTRATION_DELAY_SECONDS = 300.0
DEREGISTRATION_DELAY = "deregistration_delay.timeout_seconds"  # the target group attribute


@dataclass
class LabSettings:
    """What Provision configured, as the world saw it (None: the run never got there)."""

    health_check_interval: float | None = None
    healthy_threshold: int | None = None
    deregistration_delay: float | None = None
    instance_warmup: float | None = None


# What an instance's console shows of its bootstrap (user-data.sh's lines, through cloud-init), read
# with GetConsoleOutput: the app starts, or (never-healthy) the bootstrap fails before it does.
BOOTSTRAP_LOG = """[    0.000000] Linux version 6.1.119-129.201.amzn2023.x86_64
[   10.512034] cloud-init[1602]: scalelab: bootstrap started
[   31.220871] cloud-init[1602]: Installed: nodejs-20.18.0-1.amzn2023.0.1.x86_64
[   48.901245] cloud-init[1602]: added 133 packages in 12s
"""
BOOTSTRAP_STARTED_APP = """[   52.118403] cloud-init[1602]: [PM2] App [scalelab] launched (1 instances)
[   52.301977] cloud-init[1602]: scalelab: app started on port 3005, GET /home
[   52.650112] cloud-init[1602]: Cloud-init v. 22.2.2 finished. Up 52.64 seconds
"""
BOOTSTRAP_FAILED = """[   52.118403] cloud-init[1602]: [PM2][ERROR] Script not found: /opt/scalelab/app.js
[   52.301977] cloud-init[1602]: scalelab: bootstrap failed: the app did not start (exit status 1)
[   52.455210] cloud-init[1602]: Failed running /var/lib/cloud/instance/scripts/part-001 [1]
[   52.650112] cloud-init[1602]: Cloud-init v. 22.2.2 finished. Up 52.64 seconds
"""


class Health:
    """When each instance launched, and what its target's health checks say."""

    def __init__(self, clock: Clock, scenario: Scenario) -> None:
        self.clock = clock
        self.scenario = scenario
        self._first_seen: dict[str, float] = {}
        self._load_balancers_created: dict[str, float] = {}
        self._lock = threading.Lock()
        self.settings = LabSettings()

    def seen(self, instance_id: str) -> float:
        """When (world's clock) the instance launched: its boot started then, not when first looked at."""
        with self._lock:
            if instance_id not in self._first_seen:
                launched = self.clock.now()
                try:
                    instance = ec2_backends[ACCOUNT][REGION].get_instance(instance_id)
                    # Read by moto_fixes.get_console_output.
                    instance.__dict__["console_output"] = BOOTSTRAP_LOG + (
                        BOOTSTRAP_STARTED_APP if self.scenario.targets_become_healthy else BOOTSTRAP_FAILED
                    )
                    launch_time = instance.launch_time
                    age = (datetime.now(UTC) - launch_time.replace(tzinfo=UTC)).total_seconds()
                    launched -= max(0.0, age) * self.clock.speed
                except Exception:  # noqa: S110 - an instance moto no longer knows: count from now
                    pass
                self._first_seen[instance_id] = launched
            return self._first_seen[instance_id]

    def load_balancer_created(self, load_balancer: FakeLoadBalancer) -> float:
        """When (world's clock) the load balancer was created, from moto's creation time."""
        with self._lock:
            if load_balancer.arn not in self._load_balancers_created:
                created = datetime.fromisoformat(load_balancer.created_time.replace("Z", "+00:00"))
                age = (datetime.now(UTC) - created.replace(tzinfo=created.tzinfo or UTC)).total_seconds()
                self._load_balancers_created[load_balancer.arn] = (
                    self.clock.now() - max(0.0, age) * self.clock.speed
                )
            return self._load_balancers_created[load_balancer.arn]

    def load_balancer_active(self, load_balancer: FakeLoadBalancer) -> bool:
        return self.clock.now() >= self.load_balancer_created(load_balancer) + LOAD_BALANCER_ACTIVE_SECONDS

    def checks_from(self, target_group: FakeTargetGroup) -> float:
        """When (world's clock) the group's load balancer turns active and starts its health checks."""
        balancers = elbv2_backends[ACCOUNT][REGION].load_balancers
        created = [
            self.load_balancer_created(balancers[arn])
            for arn in target_group.load_balancer_arns
            if arn in balancers
        ]
        return min(created, default=0.0) + LOAD_BALANCER_ACTIVE_SECONDS

    def target_state(
        self,
        instance_id: str,
        interval: float = HEALTH_INTERVAL_SECONDS,
        threshold: int = HEALTHY_THRESHOLD,
        checks_from: float = 0.0,
    ) -> tuple[str, str | None, str | None]:
        """A target: ``initial`` until its app is up, the load balancer checks (from ``checks_from``),
        and ``threshold`` checks ``interval`` apart passed."""
        if not self.scenario.targets_become_healthy:
            return "unhealthy", "Target.FailedHealthChecks", "Health checks failed with these codes: [502]"
        ready = max(self.seen(instance_id) + BOOT_SECONDS, checks_from) + healthy_after(threshold, interval)
        if self.clock.now() < ready:
            return "initial", "Elb.InitialHealthChecking", "Initial health checks in progress"
        return "healthy", None, None

    def healthy_targets(self, target_group: FakeTargetGroup) -> list[str]:
        ec2 = ec2_backends[ACCOUNT][REGION]
        return sorted(
            target_id
            for target_id in target_group.targets
            if target_group.health_for({"Id": target_id}, ec2).status == "healthy"
        )

    def install(self) -> Callable[[], None]:
        """moto's target health answers with ``target_state``, its load balancers stay
        ``provisioning`` until they are active, and what Provision configured is noted;
        returns the undo."""
        original = FakeTargetGroup.health_for
        original_activate = FakeLoadBalancer.activate
        original_create_group = AutoScalingResponse.create_auto_scaling_group
        health = self

        def health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> FakeHealthStatus:
            status = original(self, target, ec2_backend)
            if status.status == "healthy" and target["Id"].startswith("i-"):
                # The target group's own health check settings, as Provision configured them.
                interval, threshold = (
                    float(self.health_check_interval_seconds),
                    int(self.healthy_threshold_count),
                )
                health.settings.health_check_interval = interval
                health.settings.healthy_threshold = threshold
                delay = self.attributes.get(DEREGISTRATION_DELAY, DEREGISTRATION_DELAY_SECONDS)
                health.settings.deregistration_delay = float(str(delay))
                state, reason, description = health.target_state(
                    target["Id"], interval, threshold, health.checks_from(self)
                )
                return FakeHealthStatus(
                    target["Id"], status.port, status.health_check_port, state, reason, description
                )
            return status

        def activate(self: FakeLoadBalancer) -> None:
            # moto makes a load balancer active the first time it is described.
            if health.load_balancer_active(self):
                original_activate(self)

        def create_auto_scaling_group(self: AutoScalingResponse) -> Any:
            # moto drops DefaultInstanceWarmup; the world notes it (the scale-out alarm waits for it).
            answer = original_create_group(self)
            warmup = self._get_int_param("DefaultInstanceWarmup")
            if warmup is not None:
                health.settings.instance_warmup = float(warmup)
            return answer

        FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]
        FakeLoadBalancer.activate = activate  # type: ignore[method-assign]
        AutoScalingResponse.create_auto_scaling_group = create_auto_scaling_group  # type: ignore[method-assign]

        def undo() -> None:
            FakeTargetGroup.health_for = original  # type: ignore[method-assign]
            FakeLoadBalancer.activate = original_activate  # type: ignore[method-assign]
            AutoScalingResponse.create_auto_scaling_group = original_create_group  # type: ignore[method-assign]

        return undo
