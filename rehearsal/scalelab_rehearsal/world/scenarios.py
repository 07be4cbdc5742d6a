"""The scenarios: the ways the world misbehaves on purpose. Each flag is played by one part of the world."""

from __future__ import annotations

from dataclasses import dataclass

# How long "slow-scale-out"'s launch takes once the alarm fired: a day of the
# world's clock, past the rehearsal's deadline at any speed up to 14 000.
SLOW_SCALE_OUT_DELAY_SECONDS = 86400.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    targets_become_healthy: bool = True  # health.py
    stress_raises_cpu: bool = True  # stress.py
    launch_fails: bool = False  # scaling.py
    launch_delay: float = 0.0  # scaling.py
    replaces_an_instance: bool = False  # scaling.py
    api_fault_rate: float = 0.0  # faults.py


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("pass", "everything works: healthy, spread, scales out under stress"),
        Scenario("never-healthy", "the app never answers health checks", targets_become_healthy=False),
        Scenario(
            "no-scale-out", "stress does not raise CPU, so the group never scales", stress_raises_cpu=False
        ),
        Scenario("launch-fails", "the scale-out launch fails with an EC2 capacity error", launch_fails=True),
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
