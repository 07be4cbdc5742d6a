"""The simulated world: what AWS itself does during a lab run, on a compressed clock.

moto stores resources, but nothing happens to them by itself: no health
checks, no CloudWatch alarm, no scaling, no Auto Scaling events, no load
balancer answering HTTP. This package plays those parts, ``speed`` times
faster than real time, after AWS's documented behaviour for the lab's
settings, one part to a module:

- ``clock``: the world's clock and its timers;
- ``timings``: how long AWS takes for each thing the world plays;
- ``health``: instances boot, the load balancer turns active, targets turn ``initial``, then ``healthy``;
- ``stress``: Run Command's stress script keeps its instances at 100 % CPU;
- ``scaling``: the policy's alarms on its metric, the scale-out and in, and their Auto Scaling events;
- ``metrics``: CloudWatch's one-minute datapoints of each group (in service, CPU, network,
  requests per target);
- ``front_door``: the load balancer's DNS name answers HTTP from the healthy targets, as the
  built-in app does, load endpoints included;
- ``traffic``: the requests and bytes the front door served, as rates on the world's clock;
- ``faults``: API faults in the handlers' calls;
- ``account``: the account a scenario's run needs (subnets, routes, instance type offerings);
- ``scenarios``: the ways the world misbehaves on purpose, each flag played by one of the parts above.

``World`` composes the parts for one rehearsal: it installs them into moto on
entry, turns the scaling part on every tick, and undoes everything on exit.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from moto.elbv2.models import FakeTargetGroup

from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.world.account import Account
from scalelab_rehearsal.world.clock import DEFAULT_SPEED, TICK_SECONDS, Clock
from scalelab_rehearsal.world.faults import ApiFaults
from scalelab_rehearsal.world.front_door import FrontDoor
from scalelab_rehearsal.world.health import (
    BOOT_SECONDS,
    HEALTH_INTERVAL_SECONDS,
    HEALTHY_THRESHOLD,
    Health,
    LabSettings,
)
from scalelab_rehearsal.world.metrics import Metrics
from scalelab_rehearsal.world.scaling import Scaling
from scalelab_rehearsal.world.scenarios import (
    CAPACITY_ERROR,
    SCENARIOS,
    SLOW_SCALE_OUT_DELAY_SECONDS,
    Scenario,
    UnknownScenario,
    scenario_named,
)
from scalelab_rehearsal.world.stress import IDLE_CPU, STRESSED_CPU, Stress
from scalelab_rehearsal.world.timings import ALARM_DATAPOINTS, DATAPOINT_SECONDS
from scalelab_rehearsal.world.traffic import Traffic

__all__ = [
    "ALARM_DATAPOINTS",
    "BOOT_SECONDS",
    "CAPACITY_ERROR",
    "DATAPOINT_SECONDS",
    "DEFAULT_SPEED",
    "HEALTHY_THRESHOLD",
    "HEALTH_INTERVAL_SECONDS",
    "IDLE_CPU",
    "SCENARIOS",
    "SLOW_SCALE_OUT_DELAY_SECONDS",
    "STRESSED_CPU",
    "TICK_SECONDS",
    "LabSettings",
    "Scenario",
    "UnknownScenario",
    "World",
    "scenario_named",
]

LOG = logging.getLogger("scalelab.rehearsal.world")
# A scale-in scenario's deadline, in AWS's seconds: two scale-in alarms' worth (scaling.py).
SCALE_IN_WITHIN_SECONDS = 1800.0
# ...and never shorter than a few real seconds of CheckScaleIn's polls.
SCALE_IN_MIN_REAL_SECONDS = 8


class World:
    """Plays AWS's part on the emulator's resources while a rehearsal runs."""

    def __init__(
        self, emulator: Emulator, scenario: Scenario, speed: float = DEFAULT_SPEED, seed: int = 7
    ) -> None:
        self.clock = Clock(speed)  # refuses a speed that is not above 0
        self.emulator = emulator
        self.scenario = scenario
        self.speed = speed
        self.health = Health(self.clock, scenario)
        self.stress = Stress(self.clock, scenario)
        self.traffic = Traffic(speed)
        self.metrics = Metrics(self.clock, self.stress, self.traffic, self.health)
        self.scaling = Scaling(self.clock, scenario, self.health, self.stress, emulator, metrics=self.metrics)
        self.front_door = FrontDoor(self.clock, self.health, scenario, self.traffic)
        self.faults = ApiFaults(scenario, seed, emulator.is_function_call)
        self.account = Account(emulator, scenario)
        self._undo: list[Callable[[], None]] = []
        self._ticker: threading.Thread | None = None

    # ---- what the rehearsal and the tests read and set ---------------------------------

    @property
    def faults_injected(self) -> int:
        return self.faults.injected

    @property
    def inject_api_faults(self) -> bool:
        """A scenario's API faults hit the handlers' calls while this is on; whoever inspects
        the account after the run turns it off."""
        return self.faults.enabled

    @inject_api_faults.setter
    def inject_api_faults(self, on: bool) -> None:
        self.faults.enabled = on

    @property
    def run_input(self) -> dict[str, Any]:
        """What the scenario's run input must say to use the account made for it, to scale on its
        signal, and to wait for the scale-in when the scenario is about it (lay a person's input
        over it)."""
        run_input = dict(self.account.run_input)
        if self.scenario.scaling:
            run_input["lab"] = {**run_input.get("lab", {}), "scaling": dict(self.scenario.scaling)}
        if self.scenario.expects_scale_in:
            within = max(SCALE_IN_MIN_REAL_SECONDS, math.ceil(SCALE_IN_WITHIN_SECONDS / self.speed))
            run_input["expectations"] = {
                **run_input.get("expectations", {}),
                "scale_in_within_seconds": within,
            }
        return run_input

    def now(self) -> float:
        """Simulated seconds since the world started."""
        return self.clock.now()

    @property
    def lab_settings(self) -> LabSettings:
        """What Provision configured, as the world saw it."""
        return self.health.settings

    def target_state(
        self, instance_id: str, interval: float = HEALTH_INTERVAL_SECONDS, threshold: int = HEALTHY_THRESHOLD
    ) -> tuple[str, str | None, str | None]:
        return self.health.target_state(instance_id, interval, threshold)

    def healthy_targets(self, target_group: FakeTargetGroup) -> list[str]:
        return self.health.healthy_targets(target_group)

    def answer(self, host: str, path: str) -> tuple[int, dict[str, Any]]:
        return self.front_door.answer(host, path)

    # ---- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> World:
        self._undo.append(self.account.install())
        self._undo.append(self.health.install())
        self._undo.append(self.stress.install())
        self._undo.append(self.metrics.install())
        self._undo.append(self.front_door.open())
        self._undo.append(self.faults.install())
        self._ticker = threading.Thread(target=self._run, name="scalelab-world", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.clock.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self.front_door.close()
        while self._undo:
            self._undo.pop()()

    def tick(self) -> None:
        """One look at the world: the burns that ended, then each group's alarm and scale-out,
        then the minute's datapoints."""
        self.stress.update()
        self.scaling.tick()
        self.metrics.tick()

    def _run(self) -> None:
        while not self.clock.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # the world keeps turning; the failure is logged
                LOG.exception("world tick failed")
