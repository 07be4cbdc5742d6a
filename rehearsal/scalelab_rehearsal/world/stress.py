"""Run Command's stress: the burns and the CPU they cause.

SSM ``AWS-RunShellScript`` carrying the stress script keeps the targeted
instances at 100 % CPU for the script's duration, unless cancelled; until then
the command is ``InProgress``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.ssm.models import ssm_backends

from scalelab_rehearsal import moto_fixes
from scalelab_rehearsal.emulator import ACCOUNT, REGION
from scalelab_rehearsal.world.clock import Clock
from scalelab_rehearsal.world.scenarios import STRESS_SCRIPT_DENIED, STRESS_SCRIPT_DENIED_EXIT, Scenario

IDLE_CPU = 3.0
STRESSED_CPU = 100.0


@dataclass
class _Burn:
    command_id: str
    instance_ids: set[str]
    started: float  # world's seconds
    duration: float
    ended: float | None = None  # when it finished or was cancelled


class Stress:
    """The stress commands sent, how long each burns, and when a group's CPU stayed high."""

    def __init__(self, clock: Clock, scenario: Scenario) -> None:
        self.clock = clock
        self.scenario = scenario
        self._burns: dict[str, _Burn] = {}
        self._lock = threading.Lock()

    def install(self) -> Callable[[], None]:
        """Every command moto's SSM sends is looked at; returns the undo."""
        backend_class = type(ssm_backends[ACCOUNT][REGION])
        original = backend_class.send_command
        stress = self

        def send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            command = original(self, *args, **kwargs)
            stress._on_command(command)
            return command

        backend_class.send_command = send_command  # type: ignore[method-assign]

        def undo() -> None:
            backend_class.send_command = original  # type: ignore[method-assign]

        return undo

    def _on_command(self, command: Any) -> None:
        script = "\n".join(command.parameters.get("commands", []))
        match = re.search(r'^DURATION="(\d+)"', script, re.MULTILINE)
        if command.document_name != "AWS-RunShellScript" or match is None:
            return
        if self.scenario.stress_fails:
            # The agent could not run the script: no burn, and AWS's terminal status at once.
            command.status = command.status_details = "Failed"
            for invocation in command.invocations:
                invocation["Status"] = invocation["StatusDetails"] = "Failed"
                invocation["ResponseCode"] = STRESS_SCRIPT_DENIED_EXIT
                invocation["StandardOutputContent"] = ""
                invocation["StandardErrorContent"] = STRESS_SCRIPT_DENIED.format(
                    instance_id=invocation["InstanceId"], command_id=command.command_id
                )
            return
        # The burn runs for its whole duration: the command is in progress, not done at once.
        command.status = command.status_details = "InProgress"
        for invocation in command.invocations:
            invocation["Status"] = invocation["StatusDetails"] = "InProgress"
            invocation["ResponseCode"] = -1  # AWS's code until the script exits
            invocation["StandardOutputContent"] = (
                f"scalelab stress: started on {invocation['InstanceId']}: 2 cores for {match.group(1)} s\n"
                "scalelab stress: using stress-ng (every core at 100 % load)\n"
            )
        with self._lock:
            self._burns[command.command_id] = _Burn(
                command.command_id, set(command.instance_ids), self.clock.now(), float(match.group(1))
            )

    def update(self) -> None:
        """End the burns whose duration is over; note when a cancelled one stopped."""
        with self._lock:
            ssm = ssm_backends[ACCOUNT][REGION]
            now = self.clock.now()
            for burn in list(self._burns.values()):
                if burn.ended is not None:
                    continue
                command = ssm.get_command_by_id(burn.command_id)
                if command.status not in moto_fixes.RUNNING:
                    burn.ended = now  # cancelled
                elif now >= burn.started + burn.duration:
                    burn.ended = burn.started + burn.duration
                    command.status = command.status_details = "Success"
                    for invocation in command.invocations:
                        invocation["Status"] = invocation["StatusDetails"] = "Success"
                        invocation["ResponseCode"] = 0
                        invocation["StandardOutputContent"] += "scalelab stress: finished\n"

    def burning(self, instance_ids: list[str]) -> bool:
        """Whether a burn is running on any of these instances now."""
        with self._lock:
            return any(
                burn.ended is None and burn.instance_ids & set(instance_ids) for burn in self._burns.values()
            )

    def average_cpu(self, in_service: list[str]) -> float:
        """The group's average CPU now: a running burn keeps its instances busy (when it raises CPU)."""
        if not in_service:
            return 0.0
        with self._lock:
            burning = {
                instance_id
                for burn in self._burns.values()
                if burn.ended is None and self.scenario.stress_raises_cpu
                for instance_id in burn.instance_ids
            }
        stressed = sum(1 for instance_id in in_service if instance_id in burning)
        return (STRESSED_CPU * stressed + IDLE_CPU * (len(in_service) - stressed)) / len(in_service)

    def high_cpu_window(self, in_service: list[str], target: float) -> tuple[float, float] | None:
        """The latest span in which a burn kept the group's average CPU above ``target``.

        Computed from when the burns started and ended, not from when this
        thread happened to look, so a busy machine cannot make the world miss
        an alarm.
        """
        if not self.scenario.stress_raises_cpu:
            return None
        latest = None
        for burn in self._burns.values():
            stressed = sum(1 for instance_id in in_service if instance_id in burn.instance_ids)
            average = (STRESSED_CPU * stressed + IDLE_CPU * (len(in_service) - stressed)) / len(in_service)
            if average > target:
                window = (burn.started, burn.ended if burn.ended is not None else self.clock.now())
                latest = window if latest is None or window[0] > latest[0] else latest
        return latest
