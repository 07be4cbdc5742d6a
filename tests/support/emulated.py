"""Waiting for the emulated account to come to rest, for the suites that run real executions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from scalelab_rehearsal.emulator import Emulator

# Every lab and cleanup execution of a test ends well within this.
SETTLE_DEADLINE_SECONDS = 120.0


def settle(emulator: Emulator) -> None:
    """Wait until no lab, load or cleanup execution runs and no Lambda is still busy."""
    assert emulator.stack is not None
    sfn = emulator.client("stepfunctions")
    machines = [
        emulator.stack.outputs["StateMachineArn"],
        emulator.stack.outputs["CleanupStateMachineArn"],
        emulator.stack.outputs["LoadStateMachineArn"],
    ]
    deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        running = [
            execution
            for machine in machines
            for execution in sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING")[
                "executions"
            ]
        ]
        if not running and emulator.runtime is not None and emulator.runtime.in_flight == 0:
            # An execution that just ended puts its status change event; let its cleanup start.
            time.sleep(0.3)
            if not sfn.list_executions(stateMachineArn=machines[1], statusFilter="RUNNING")["executions"]:
                return
        time.sleep(0.05)
    raise TimeoutError(f"executions still running after {SETTLE_DEADLINE_SECONDS} s")


@contextmanager
def runs_leave_their_resources(emulator: Emulator) -> Iterator[None]:
    """Teardown fails and no cleanup follows (the cleanup rule's targets are removed), so a run
    started inside leaves what it created, for the janitor to find; both come back on exit."""
    assert emulator.stack is not None
    assert emulator.runtime is not None
    teardown = emulator.stack.resources["TeardownLabFunction"]
    rule = emulator.stack.resources["CleanupStateMachineLabExecutionEnded"]
    events = emulator.client("events")
    targets = events.list_targets_by_rule(Rule=rule)["Targets"]
    events.remove_targets(Rule=rule, Ids=[target["Id"] for target in targets])
    emulator.runtime.faults = lambda function, _event: (
        RuntimeError("teardown fails") if function == teardown else None
    )
    try:
        yield
    finally:
        emulator.runtime.faults = lambda _function, _event: None
        events.put_targets(Rule=rule, Targets=targets)
