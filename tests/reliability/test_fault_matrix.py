"""The fault-injection matrix: whatever goes wrong, and wherever, nothing is left behind.

Each case runs a whole lab through the real state machine on the emulated
account with one kind of fault: a handler raising at a state, the execution
stopped in any state (while its Lambda runs, as the interpreter enters it, or
while AwaitScaleOut waits for its task token), a seeded fraction of AWS calls
failing, or a Lambda timing out. Then the cleanup state machine (started by the
execution's status change event) and the janitor's sweep run, and the account
must hold no resource tagged by any run, no lab lock, and a record for every
run that says what happened. The summary line is printed at the end of the
session (see conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
from moto.ec2.exceptions import DependencyViolationError
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
from moto.stepfunctions.parser.asl.eval.environment import Environment
from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.rehearse import history, merged_input, start_execution, wait_for
from scalelab_rehearsal.runtime import LambdaTimedOut
from scalelab_rehearsal.world import DEFAULT_SPEED, SCENARIOS, Scenario, World

from scalelab.steps.janitor import execution_arn
from tests.reliability.conftest import TALLY, everything_tagged, sweep, table_items
from tests.support.emulated import settle
from tests.support.template import ROOT, resource

EXECUTION_DEADLINE_SECONDS = 120.0
ENDED_STATUSES = {"passed", "failed", "aborted", "timed_out", "rejected"}


class LambdaState(NamedTuple):
    """A state whose Lambda a fault hits: the function's logical id, which of its calls, and the
    world in which a run reaches the state."""

    logical_id: str
    which: Callable[[Any], bool]
    scenario: Scenario = SCENARIOS["pass"]


LAMBDA_STATES: dict[str, LambdaState] = {
    "Prepare": LambdaState("PrepareRunFunction", lambda _: True),
    "Provision": LambdaState("ProvisionLabFunction", lambda _: True),
    "CheckHealthy": LambdaState("CheckTargetsFunction", lambda event: "healthy_count" in event),
    "Probe": LambdaState("ProbeAppFunction", lambda _: True),
    "StartStress": LambdaState("StartStressFunction", lambda _: True),
    "AwaitScaleOut": LambdaState("AwaitScaleOutFunction", lambda _: True),
    # Reached when no scale-out event came by the deadline.
    "CheckScaleOut": LambdaState("CheckScaleOutFunction", lambda _: True, SCENARIOS["no-scale-out"]),
    "CheckNewHealthy": LambdaState("CheckTargetsFunction", lambda event: "instance_id" in event),
    "StopStress": LambdaState("StopStressFunction", lambda _: True),
    # Reached when the run waits for the scale-in (the scenario's input sets its deadline).
    "CheckScaleIn": LambdaState("CheckScaleInFunction", lambda _: True, SCENARIOS["scale-in"]),
    "Judge": LambdaState("JudgeRunFunction", lambda _: True),
    "Teardown": LambdaState("TeardownLabFunction", lambda _: True),
    "PublishReport": LambdaState("PublishReportFunction", lambda _: True),
}


@dataclass
class Case:
    name: str
    scenario: Scenario
    # (deployed function name, event) -> the fault to raise, or None.
    fault: Callable[[str, Any], Exception | None] | None = None
    stop_in: str | None = None  # stop the execution when this state's Lambda starts
    # Or when a call of a function satisfies this: (deployed function name, event) -> stop now.
    stop_when: Callable[[Emulator, str, Any], bool] | None = None
    stop_entering: str | None = None  # stop it as the interpreter enters this state, before its work
    stop_waiting: bool = False  # stop it while AwaitScaleOut waits for its task token, as a person would
    releasing: bool = False  # a security group's first deletion fails: AWS is still releasing its ENIs
    speed: float = DEFAULT_SPEED
    run_input: dict[str, Any] = field(default_factory=dict)
    seed: int = 7


def _function(emulator: Emulator, state: str) -> tuple[str, Callable[[Any], bool]]:
    assert emulator.stack is not None
    logical_id, which, _scenario = LAMBDA_STATES[state]
    return emulator.stack.resources[logical_id], which


@contextmanager
def _stopping_on_entering(emulator: Emulator, arn: str, state: str, stops: list[float]) -> Iterator[None]:
    """Stop the execution ``arn`` from inside the interpreter, as it enters ``state``: a Choice or a
    Pass state ends too soon for a stop from outside to land in it."""
    original = CommonStateField._eval_state_input

    def eval_state_input(self: CommonStateField, env: Environment) -> None:
        if (
            self.name == state
            and not stops
            and env.states.context_object.context_object_data["Execution"]["Id"] == arn
        ):
            stops.append(time.time())
            emulator.client("stepfunctions").stop_execution(executionArn=arn, cause="fault matrix")
        original(self, env)

    CommonStateField._eval_state_input = eval_state_input  # type: ignore[method-assign]
    try:
        yield
    finally:
        CommonStateField._eval_state_input = original  # type: ignore[method-assign]


def _stop_once_waiting(emulator: Emulator, arn: str, stops: list[float]) -> threading.Thread:
    """Stop the execution once AwaitScaleOut's Lambda has returned and the task token wait began."""

    def watch() -> None:
        deadline = time.monotonic() + EXECUTION_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            events = history(emulator, arn)
            if any(event["type"] == "TaskSubmitted" for event in events):
                stops.append(time.time())
                emulator.client("stepfunctions").stop_execution(executionArn=arn, cause="fault matrix")
                return
            if any(
                event["type"].startswith("Execution") and event["type"] != "ExecutionStarted"
                for event in events
            ):
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, name="fault-matrix-stop", daemon=True)
    watcher.start()
    return watcher


@contextmanager
def _security_groups_still_releasing(injected: list[str]) -> Iterator[None]:
    """Each security group's first deletion fails with DependencyViolation, as on AWS while the
    load balancer's and the instances' network interfaces are still being released."""
    original = SecurityGroupBackend.delete_security_group
    refused: set[str] = set()

    def delete_security_group(self: Any, name: str | None = None, group_id: str | None = None) -> None:
        if group_id is not None and group_id not in refused:
            refused.add(group_id)
            injected.append(f"DeleteSecurityGroup {group_id}")
            raise DependencyViolationError(f"resource {group_id} has a dependent object")
        original(self, name, group_id)

    SecurityGroupBackend.delete_security_group = delete_security_group  # type: ignore[method-assign]
    try:
        yield
    finally:
        SecurityGroupBackend.delete_security_group = original  # type: ignore[method-assign]


@pytest.fixture
def run_case(emulator: Emulator) -> Callable[[Case], dict[str, Any]]:
    def run(case: Case) -> dict[str, Any]:
        assert emulator.stack is not None
        assert emulator.runtime is not None
        runtime = emulator.runtime
        name = f"matrix-{case.name}"
        arn = execution_arn(emulator.stack.outputs["StateMachineArn"], name)
        injected: list[str] = []
        stops: list[float] = []

        def fault(function: str, event: Any) -> Exception | None:
            found = case.fault(function, event) if case.fault else None
            if found is not None:
                injected.append(function)
            return found

        def stop(function: str, event: Any) -> None:
            if case.stop_when is not None:
                now = case.stop_when(emulator, function, event)
            else:
                target, which = _function(emulator, case.stop_in or "")
                now = function == target and which(event)
            if now and not stops:
                stops.append(time.time())
                emulator.client("stepfunctions").stop_execution(executionArn=arn, cause="fault matrix")

        runtime.faults = fault
        if case.stop_in or case.stop_when:
            runtime.listeners.append(stop)
        entering = (
            _stopping_on_entering(emulator, arn, case.stop_entering, stops)
            if case.stop_entering
            else nullcontext()
        )
        releasing = _security_groups_still_releasing(injected) if case.releasing else nullcontext()
        try:
            with World(emulator, case.scenario, case.speed, seed=case.seed) as world, entering, releasing:
                run_input = merged_input(
                    {**case.run_input, "lab": {**case.run_input.get("lab", {}), "name": name}},
                    scenario=world.run_input,
                )
                start_execution(emulator, run_input, name)
                watcher = _stop_once_waiting(emulator, arn, stops) if case.stop_waiting else None
                description = wait_for(emulator, arn, EXECUTION_DEADLINE_SECONDS)
                if watcher is not None:
                    watcher.join()
                settle(emulator)
                api_faults = world.faults_injected
        finally:
            runtime.faults = lambda _function, _event: None
            if stop in runtime.listeners:
                runtime.listeners.remove(stop)
        swept = sweep(emulator)
        settle(emulator)
        faults = len(injected) + len(stops) + api_faults
        TALLY.runs += 1
        TALLY.faults += faults
        return {
            "status": description["status"],
            "swept": swept,
            "faults": faults,
            "stops": len(stops),
            # Seconds from the stop to the execution's end, as Step Functions recorded it.
            "stopped_within": description["stopDate"].timestamp() - stops[0] if stops else None,
            "history": history(emulator, arn),
        }

    return run


def assert_nothing_left(emulator: Emulator, outcome: dict[str, Any]) -> None:
    assert outcome["swept"]["could_not_remove"] == []
    left = everything_tagged(emulator)
    TALLY.left.extend(left)
    assert left == []
    assert table_items(emulator, "LOCK") == []
    # No load keeps running after a run ends: executions take no tags, so they are asked for.
    assert emulator.stack is not None
    loads = emulator.client("stepfunctions").list_executions(
        stateMachineArn=emulator.stack.outputs["LoadStateMachineArn"], statusFilter="RUNNING"
    )["executions"]
    assert loads == []
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
    world = LAMBDA_STATES[state].scenario
    outcome = run_case(Case(f"raise-{state.lower()}", world, fault=_raising_at(state, emulator)))

    assert outcome["faults"] >= 1
    # A stress that could not be cancelled ends by its own duration, and a page that could not be
    # written is only the verdict's companion: the verdict stands.
    assert outcome["status"] == ("SUCCEEDED" if state in {"StopStress", "PublishReport"} else "FAILED")
    assert_nothing_left(emulator, outcome)
    published = [
        json.loads(event["taskScheduledEventDetails"]["parameters"])["Message"]
        for event in outcome["history"]
        if event.get("taskScheduledEventDetails", {}).get("resourceType") == "sns"
    ]
    if state == "PublishReport":
        # Notify still publishes Judge's plain notification: the verdict first, where the reports are.
        assert len(published) == 1
        assert published[0].startswith("PASSED: scalelab run ")
        assert "\nJSON report: s3://" in published[0]
        assert "Report (a web page)" not in published[0]
    if state == "Judge":
        # The verdict JudgeFailed writes still carries a notification, and Notify publishes it.
        assert len(published) == 1
        assert published[0].startswith("FAILED: scalelab run ")
        assert "(the judge failed, so there is no report): " in published[0]
        assert not any(event["type"] == "TaskFailed" for event in outcome["history"])


@pytest.mark.parametrize("state", list(LAMBDA_STATES))
def test_stopping_the_execution_in_any_phase_leaves_nothing(
    state: str, run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    outcome = run_case(Case(f"stop-{state.lower()}", LAMBDA_STATES[state].scenario, stop_in=state))

    assert outcome["stops"] == 1
    assert outcome["status"] == "ABORTED"
    assert_nothing_left(emulator, outcome)


def _entered(outcome: dict[str, Any]) -> list[str]:
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in outcome["history"]
        if "stateEnteredEventDetails" in event
    ]


# Every other state a stop can land in, and the world (and fault) that takes a run there:
# the scenario, a world clock slow enough for a Wait loop, a handler failing, or AWS still
# releasing network interfaces when teardown deletes a security group.
# A new instance takes 1.3 s to turn healthy, so CheckNewHealthy, which follows its launch event
# within a few tenths of a second, loops.
SLOW_WORLD = 60.0
STATES_ENTERED: dict[str, dict[str, Any]] = {
    "Healthy?": {},
    # Targets that never turn healthy, whatever the machine's speed: at SLOW_WORLD a busy machine
    # (four workers on two cores) once finished Provision after the first targets were healthy.
    "WaitForHealthy": {"scenario": "never-healthy"},
    "ProbePassed?": {},
    "NewHealthy?": {},
    "WaitForNewHealthy": {"speed": SLOW_WORLD},
    "StopStressAfterError": {"fault": "AwaitScaleOut"},
    "ScaleIn?": {},
    "LoadStopped": {"scenario": "scale-in"},
    "ScaledIn?": {"scenario": "scale-in"},
    "WaitForScaleIn": {"scenario": "scale-in-never"},
    "JudgeFailed": {"fault": "Judge"},
    "TeardownDone?": {},
    "PageToWrite?": {},
    "WaitForRelease": {"releasing": True},
    "Notify": {},
    "Outcome?": {},
}


def test_the_matrix_stops_in_every_state_a_lab_execution_can_be_stopped_in() -> None:
    definition = json.loads((ROOT / resource("LabStateMachine")["Properties"]["DefinitionUri"]).read_text())
    # A Succeed or Fail state ends the execution as it is entered: no stop can land in it.
    stoppable = {
        name for name, state in definition["States"].items() if state["Type"] not in {"Succeed", "Fail"}
    }

    assert set(LAMBDA_STATES) | set(STATES_ENTERED) == stoppable


@pytest.mark.parametrize("state", list(STATES_ENTERED))
def test_stopping_the_execution_as_it_enters_any_other_state_leaves_nothing(
    state: str, run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    setting = STATES_ENTERED[state]
    case = Case(
        f"at-{state.lower().strip('?')}",
        SCENARIOS[setting.get("scenario", "pass")],
        fault=_raising_at(setting["fault"], emulator) if "fault" in setting else None,
        stop_entering=state,
        releasing=setting.get("releasing", False),
        speed=setting.get("speed", DEFAULT_SPEED),
    )

    outcome = run_case(case)

    assert _entered(outcome)[-1] == state
    assert outcome["stops"] == 1
    assert outcome["status"] == "ABORTED"
    assert_nothing_left(emulator, outcome)


def test_stopping_the_execution_while_it_waits_for_the_scale_out_aborts_it_at_once_and_leaves_nothing(
    run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    # No scale-out ever completes the token; the wait's own deadline is a minute away.
    waiting = Case(
        "stop-waiting",
        SCENARIOS["no-scale-out"],
        stop_waiting=True,
        run_input={"expectations": {"scale_out_within_seconds": 60}},
    )

    outcome = run_case(waiting)

    assert outcome["stops"] == 1
    assert outcome["status"] == "ABORTED"
    assert outcome["stopped_within"] < 5
    assert _entered(outcome)[-1] == "AwaitScaleOut"
    assert outcome["history"][-1]["type"] == "ExecutionAborted"
    assert not [event for event in outcome["history"] if event["type"] == "TaskTimedOut"]
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


def test_labs_at_once_one_failing_in_provision_leave_nothing(emulator: Emulator) -> None:
    # Issue 15: labs run at once, one of them failing halfway, touch nothing of each other's.
    assert emulator.stack is not None
    assert emulator.runtime is not None
    labs = ("matrix-at-once-a", "matrix-at-once-b", "matrix-at-once-c")
    failing = labs[1]
    provision, _ = _function(emulator, "Provision")
    injected: list[str] = []

    def fault(function: str, event: Any) -> Exception | None:
        if function == provision and isinstance(event, dict) and event.get("lab", {}).get("name") == failing:
            injected.append(function)
            return RuntimeError("injected fault in one lab's Provision")
        return None

    emulator.runtime.faults = fault
    try:
        with World(emulator, PASS, DEFAULT_SPEED):
            arns = {lab: start_execution(emulator, merged_input({"lab": {"name": lab}}), lab) for lab in labs}
            statuses = {
                lab: wait_for(emulator, arn, EXECUTION_DEADLINE_SECONDS)["status"]
                for lab, arn in arns.items()
            }
            settle(emulator)
    finally:
        emulator.runtime.faults = lambda _function, _event: None
    swept = sweep(emulator)
    settle(emulator)
    TALLY.runs += len(labs)
    TALLY.faults += len(injected)

    assert injected
    assert statuses == {labs[0]: "SUCCEEDED", failing: "FAILED", labs[2]: "SUCCEEDED"}
    assert_nothing_left(emulator, {"swept": swept})


# ---- the load generator (a request_count run: the load state machine instead of the SSM burn) ----

REQUEST_COUNT = {"lab": {"scaling": {"metric": "request_count"}}}


def _load_executions(emulator: Emulator) -> list[dict[str, Any]]:
    assert emulator.stack is not None
    found: list[dict[str, Any]] = emulator.client("stepfunctions").list_executions(
        stateMachineArn=emulator.stack.outputs["LoadStateMachineArn"]
    )["executions"]
    return found


def _load_history(emulator: Emulator) -> list[dict[str, Any]]:
    (load,) = _load_executions(emulator)
    return history(emulator, load["executionArn"])


def _worker(emulator: Emulator) -> str:
    assert emulator.stack is not None
    return emulator.stack.resources["LoadWorkerFunction"]


def test_a_load_worker_failing_leaves_the_load_going_and_the_run_ending_with_nothing_left(
    run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    worker = _worker(emulator)

    def fault(function: str, _event: Any) -> Exception | None:
        return RuntimeError("injected fault in a load worker") if function == worker else None

    outcome = run_case(Case("load-worker-fails", PASS, fault=fault, run_input=REQUEST_COUNT))

    assert outcome["faults"] >= 1
    assert outcome["status"] in {"SUCCEEDED", "FAILED"}
    entered = _entered(outcome)
    assert entered.index("StartStress") < entered.index("Judge") < entered.index("Teardown")
    load = _load_history(emulator)
    # Each failed worker became a recorded result, and the load went on to another round.
    failed = [
        event for event in load if event.get("stateEnteredEventDetails", {}).get("name") == "WorkerFailed"
    ]
    rounds = [event for event in load if event.get("stateEnteredEventDetails", {}).get("name") == "Round"]
    assert failed
    assert len(rounds) >= 2
    assert (_load_executions(emulator)[0]["status"]) in {"ABORTED", "SUCCEEDED"}
    assert_nothing_left(emulator, outcome)


def _loading(emulator: Emulator, function: str, event: Any) -> bool:
    """A load worker of a second round starts: the load has been running a while."""
    return function == _worker(emulator) and isinstance(event, dict) and event.get("round", 0) >= 1


def test_stopping_the_run_mid_load_stops_the_load_and_leaves_nothing(
    run_case: Callable[[Case], dict[str, Any]], emulator: Emulator
) -> None:
    # A load under its target: the run waits for a scale-out that never comes, so the load runs
    # round after round (under "pass" the first round can scale the group out and end the run).
    outcome = run_case(Case("stop-mid-load", SCENARIOS["target-too-high"], stop_when=_loading))

    assert outcome["stops"] == 1
    assert outcome["status"] == "ABORTED"
    (load,) = _load_executions(emulator)
    # The cleanup state machine's teardown stopped it (the run never reached StopStress).
    assert "StopStress" not in _entered(outcome)
    assert load["status"] == "ABORTED"
    assert_nothing_left(emulator, outcome)
