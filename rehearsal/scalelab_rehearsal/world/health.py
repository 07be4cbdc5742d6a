"""Instances and their targets' health.

An instance boots and its user data starts the app in about ``BOOT_SECONDS``;
the target group then needs ``HEALTHY_THRESHOLD`` consecutive passing checks
``HEALTH_INTERVAL_SECONDS`` apart (the target group Provision creates), so a
target is ``initial`` until then, then ``healthy``. moto's own answer is
corrected where it says ``healthy``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.ec2.models import ec2_backends
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

from scalelab_rehearsal.emulator import ACCOUNT, REGION
from scalelab_rehearsal.world.clock import Clock
from scalelab_rehearsal.world.scenarios import Scenario

# AWS behaviour, in simulated seconds.
BOOT_SECONDS = 60.0  # user data: dnf install nodejs, npm install pm2, start the app
# A target group's HealthCheckIntervalSeconds and HealthyThresholdCount are read
# from the group itself; these are Provision's values, used for the warm-up.
HEALTH_INTERVAL_SECONDS = 10.0
HEALTHY_THRESHOLD = 2

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
        self._lock = threading.Lock()

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

    def target_state(
        self, instance_id: str, interval: float = HEALTH_INTERVAL_SECONDS, threshold: int = HEALTHY_THRESHOLD
    ) -> tuple[str, str | None, str | None]:
        """A target: ``initial`` until its app is up and ``threshold`` checks ``interval`` apart passed."""
        if not self.scenario.targets_become_healthy:
            return "unhealthy", "Target.FailedHealthChecks", "Health checks failed with these codes: [502]"
        ready = self.seen(instance_id) + BOOT_SECONDS + threshold * interval
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
        """moto's target health answers with ``target_state``; returns the undo."""
        original = FakeTargetGroup.health_for
        health = self

        def health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> FakeHealthStatus:
            status = original(self, target, ec2_backend)
            if status.status == "healthy" and target["Id"].startswith("i-"):
                # The target group's own health check settings, as Provision configured them.
                state, reason, description = health.target_state(
                    target["Id"], float(self.health_check_interval_seconds), int(self.healthy_threshold_count)
                )
                return FakeHealthStatus(
                    target["Id"], status.port, status.health_check_port, state, reason, description
                )
            return status

        FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]

        def undo() -> None:
            FakeTargetGroup.health_for = original  # type: ignore[method-assign]

        return undo
