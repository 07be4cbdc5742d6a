"""The fault-injection matrix: whatever goes wrong, and wherever, nothing is left behind.

Each case runs a whole lab through the real state machine on the emulated
account with one kind of fault: a handler raising at a state, the execution
stopped while a state's Lambda runs, a seeded fraction of AWS calls failing,
or a Lambda timing out. Then the cleanup state machine (started by the
execution's status change event) and the janitor's sweep run, and the account
must hold no resource tagged by any run, no lab lock, and a record for every
run that says what happened. The summary line is printed at the end of the
session (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.rehearse import merged_input, start_execution, wait_for
from scalelab_rehearsal.runtime import LambdaTimedOut
from scalelab_rehearsal.world import SCENARIOS, Scenario, World

from scalelab.steps.janitor import execution_arn
from tests.reliability.conftest import TALLY, everything_tagged, settle, sweep, table_items

EXECUTION_DEADLINE_SECONDS = 120.0
ENDED_STATUSES = {"passed", "failed", "aborted", "timed_out", "rejected"}
# The state whose Lambda a fault hits, the function's logical id, and which of its calls.
LAMBDA_STATES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "Prepare": ("PrepareRunFunction", lambda _: True),
    "Provision": ("ProvisionLabFunction", lambda _: True),
    "CheckHealthy": ("CheckTargetsFunction", lambda event: "healthy_count" in event),
    "Probe": ("ProbeAppFunction", lambda _: True),
    "StartStress": ("StartStressFunction", lambda _: True),
    "AwaitScaleOut": ("AwaitScaleOutFunction", lambda _: True),
    "CheckNewHealthy": ("CheckTargetsFunction", lambda event: "instance_id" in event),
    "StopStress": ("StopStressFunction", lambda _: True),
    "Judge": ("JudgeRunFunction", lambda _: True),
    "Teardown": ("TeardownLabFunction", lambda _: True),
}


@dataclass
class Case:
    name: str
    scenario: Scenario
    # (deployed function name, event) -> the fault to raise, or None.
    fault: Callable[[str, Any], Exception | None] | None = None
    stop_in: str | None = None  # stop the execution when this state's Lambda starts
    seed: int = 7


def _function(emulator: Emulator, state: str) -> tuple[str, Callable[[Any], bool]]:
    assert emulator.stack is not None
    logical_id, which = LAMBDA_STATES[state]
    return emulator.stack.resources[logical_id], which


@pytest.fixture
def run_case(emulator: Emulator) -> Callable[[Case], dict[str, Any]]:
    def run(case: Case) -> dict[str, Any]:
        assert emulator.stack is not None
        assert emulator.runtime is not None
        runtime = emulator.runtime
        name = f"matrix-{case.name}"
        arn = execution_arn(emulator.stack.outputs["StateMachineArn"], name)
        injected: list[str] = []

        def fault(function: str, event: Any) -> Exception | None:
            found = case.fault(function, event) if case.fault else None
            if found is not None:
                injected.append(function)
            return found

        def stop(function: str, event: Any) -> None:
            target, which = _function(emulator, case.stop_in or "")
            if function == target and which(event) and not injected:
                injected.append(function)
                emulator.client("stepfunctions").stop_execution(executionArn=arn, cause="fault matrix")

        runtime.faults = fault
        if case.stop_in:
            runtime.listeners.append(stop)
        try:
            with World(emulator, case.scenario, seed=case.seed) as world:
                run_input = merged_input({"lab": {"name": name}})
                start_execution(emulator, run_input, name)
                description = wait_for(emulator, arn, EXECUTION_DEADLINE_SECONDS)
                settle(emulator)
                api_faults = world.faults_injected
        finally:
            runtime.faults = lambda _function, _event: None
            if stop in runtime.listeners:
                runtime.listeners.remove(stop)
        swept = sweep(emulator)
        settle(emulator)
        TALLY.runs += 1
        TALLY.faults += len(injected) + api_faults
        return {"status": description["status"], "swept": swept, "faults": len(injected) + api_faults}

    return run


def assert_nothing_left(emulator: Emulator, outcome: dict[str, Any]) -> None:
    assert outcome["swept"]["could_not_remove"] == []
    left = everything_tagged(emulator)
    TALLY.left.extend(left)
    assert left == []
    assert table_items(emulator, "LOCK") == []
    for record in table_items(emulator, "RUN"):
        assert record["status"]["S"] in ENDED_STATUSES, record
        assert record.get("reason", {}).get("S") or record["status"]["S"] == "passed", record
        assert "torn_down_at" in record, record


def _raising_at(state: str, emulator: Emulator) -> Callable[[str, Any], Exception | None]:
    def fault(function: str, event: Any) -> Exception | None:
        target, which = _function(emulator, state)
        return RuntimeError(f"injected fault in {state}") if function == target and which(event) else None

    return fault


def _timing_out_in(state: str, emulator: Emulator, times: int) -> Callable[[str, Any], Exception | None]:
    calls: list[str] = []

    def fault(function: str, event: Any) -> Exception | None:
        target, _ = _function(emulator, state)
        if function != target or len(calls) >= times:
            return None
        calls.append(function)
        return LambdaTimedOut()

    return fault


PASS = SCENARIOS["pass"]


@pytest.mark.parametrize("state", list(LAMBDA_STATES))
def test_a_handler_raising_at_any_state_leaves_nothing(
    state: str, run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    outcome = run_case(Case(f"raise-{state.lower()}", PASS, fault=_raising_at(state, emulator)))

    assert outcome["faults"] >= 1
    # A stress that could not be cancelled ends by its own duration: the verdict stands.
    assert outcome["status"] == ("SUCCEEDED" if state == "StopStress" else "FAILED")
    assert_nothing_left(emulator, outcome)


@pytest.mark.parametrize("state", list(LAMBDA_STATES))
def test_stopping_the_execution_in_any_phase_leaves_nothing(
    state: str, run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    outcome = run_case(Case(f"stop-{state.lower()}", PASS, stop_in=state))

    assert outcome["faults"] == 1
    assert outcome["status"] == "ABORTED"
    assert_nothing_left(emulator, outcome)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_fifth_of_aws_calls_failing_leaves_nothing(
    seed: int, run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    flaky = Scenario("flaky-api-20", "a fifth of the handlers' AWS calls fail", api_fault_rate=0.2)

    outcome = run_case(Case(f"flaky-{seed}", flaky, seed=seed))

    assert outcome["faults"] >= 1
    assert outcome["status"] in {"SUCCEEDED", "FAILED"}
    assert_nothing_left(emulator, outcome)


@pytest.mark.parametrize(
    ("state", "times"),
    [("Provision", 1), ("Provision", 99), ("Teardown", 1)],
    ids=["provision-once", "provision-always", "teardown-once"],
)
def test_a_lambda_timing_out_leaves_nothing(
    state: str,
    times: int,
    run_case: Callable[[Case], dict[str, Any]],
    emulator: Emulator,
) -> None:
    outcome = run_case(
        Case(f"timeout-{state.lower()}-{times}", PASS, fault=_timing_out_in(state, emulator, times))
    )

    assert outcome["faults"] >= 1
    assert_nothing_left(emulator, outcome)
