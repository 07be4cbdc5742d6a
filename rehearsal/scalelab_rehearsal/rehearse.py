"""One rehearsal: the emulated account, the simulated world, one execution of the real state machine."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalelab_rehearsal import ROOT
from scalelab_rehearsal.deploy import read_template
from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.iam.enforce import CheckedCall
from scalelab_rehearsal.iam.evaluator import Check, Decision
from scalelab_rehearsal.world import DEFAULT_SPEED, World, scenario_named

# What AWS does (boot, health checks, the CPU alarm, the stress script's own
# duration) happens on the simulated world's clock, ``speed`` times faster than
# real time; the handlers and the state machine measure their deadlines in real
# seconds. So the template's deadlines are divided by the speed, and never
# shorter than the few real seconds the handlers themselves take: a lab takes
# seconds at the default speed, and real minutes at speed 1, as on AWS.
DEADLINE_PARAMETERS = {
    "healthy_within_seconds": "HealthyWithinSeconds",
    "scale_out_within_seconds": "ScaleOutWithinSeconds",
    "new_instance_healthy_within_seconds": "NewInstanceHealthyWithinSeconds",
}
MIN_DEADLINE_SECONDS = 8
# Besides the deadlines: Prepare, Provision, Judge and Teardown, in real seconds.
EXECUTION_SLACK_SECONDS = 120.0
REPORTS_DIR = ROOT / ".rehearsal" / "reports"
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
FOLLOW_SECONDS = 0.25


@dataclass
class Outcome:
    execution_arn: str
    run_id: str
    status: str
    error: str | None
    cause: str | None
    verdict: dict[str, Any] | None
    report_path: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    lambda_invocations: int = 0
    # Resource types of the template the emulator could not create (reported, skipped).
    skipped_types: list[str] = field(default_factory=list)
    # Every call a function or state machine made while the emulator ran, as IAM decided it.
    iam_calls: list[CheckedCall] = field(default_factory=list)
    iam_deliveries: list[tuple[Check, Decision]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "SUCCEEDED" and bool(self.verdict and self.verdict.get("passed"))


def rehearsal_input(speed: float = DEFAULT_SPEED) -> dict[str, Any]:
    """The run input of a rehearsal at ``speed``: a poll a second, the template's deadlines
    in the world's time."""
    parameters = read_template()["Parameters"]
    return {
        "timing": {"poll_seconds": 1},
        "expectations": {
            field: max(MIN_DEADLINE_SECONDS, math.ceil(int(parameters[name]["Default"]) / speed))
            for field, name in DEADLINE_PARAMETERS.items()
        },
    }


def merged_input(overrides: dict[str, Any] | None, speed: float = DEFAULT_SPEED) -> dict[str, Any]:
    """The rehearsal's defaults at ``speed``, with a person's input laid over them section by section."""
    merged = rehearsal_input(speed)
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


def start_execution(emulator: Emulator, run_input: Any, name: str | None = None) -> str:
    arn: str = emulator.client("stepfunctions").start_execution(
        stateMachineArn=emulator.state_machine_arn,
        name=name or f"rehearsal-{uuid.uuid4().hex[:12]}",
        input=json.dumps(run_input),
    )["executionArn"]
    return arn


def history(emulator: Emulator, execution_arn: str) -> list[dict[str, Any]]:
    pages = (
        emulator.client("stepfunctions")
        .get_paginator("get_execution_history")
        .paginate(executionArn=execution_arn)
    )
    return [event for page in pages for event in page["events"]]


def wait_for(
    emulator: Emulator,
    execution_arn: str,
    timeout_seconds: float = 120.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Follow an execution to its end, handing each new history event to ``on_event``."""
    sfn = emulator.client("stepfunctions")
    seen = 0
    deadline = time.monotonic() + timeout_seconds
    while True:
        description: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        events = history(emulator, execution_arn)
        if on_event is not None:
            for event in events[seen:]:
                on_event(event)
        seen = len(events)
        if description["status"] in TERMINAL_STATUSES:
            return description
        if time.monotonic() > deadline:
            raise TimeoutError(f"the execution was still {description['status']} after {timeout_seconds} s")
        # Woken at once when an execution ends; otherwise a look at the history four times a
        # second: each look fetches the whole history, and looking more often took CPU from the run.
        with emulator.execution_ended:
            emulator.execution_ended.wait(FOLLOW_SECONDS)


def collect(emulator: Emulator, execution_arn: str, description: dict[str, Any], started: float) -> Outcome:
    """The verdict from the execution's output or last Judge result, and the report copied locally."""
    events = history(emulator, execution_arn)
    verdict = _verdict_from(events)
    run_id = execution_arn.rsplit(":", 1)[-1]
    report_path = None
    if verdict and verdict.get("report"):
        location = verdict["report"]
        body = emulator.client("s3").get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
        REPORTS_DIR.mkdir(parents=True, exist_ok=True)
        report_path = REPORTS_DIR / f"{verdict['run_id']}.json"
        report_path.write_bytes(body)
        run_id = verdict["run_id"]
    runtime = emulator.runtime
    return Outcome(
        execution_arn=execution_arn,
        run_id=run_id,
        status=description["status"],
        error=description.get("error"),
        cause=description.get("cause"),
        verdict=verdict,
        report_path=report_path,
        history=events,
        seconds=time.monotonic() - started,
        lambda_invocations=len(runtime.invocations) if runtime else 0,
        skipped_types=list(emulator.stack.skipped_types) if emulator.stack else [],
        iam_calls=list(emulator.iam.calls) if emulator.iam else [],
        iam_deliveries=list(emulator.iam.deliveries) if emulator.iam else [],
    )


def _verdict_from(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    for event in reversed(events):
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") in {"Judge", "JudgeFailed"}:
            verdict: dict[str, Any] | None = json.loads(details.get("output", "{}")).get("verdict")
            return verdict
    return None


def rehearse(
    scenario: str = "pass",
    speed: float | None = None,
    run_input: dict[str, Any] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout_seconds: float | None = None,
) -> Outcome:
    """Rehearse one lab run end to end and return its outcome; the emulator is gone afterwards.

    Without ``timeout_seconds``, the wait lasts as long as the run's deadlines allow, and then some.
    """
    started = time.monotonic()
    chosen = scenario_named(scenario)
    speed = speed or DEFAULT_SPEED
    run = merged_input(run_input, speed)
    if timeout_seconds is None:
        timeout_seconds = EXECUTION_SLACK_SECONDS + _deadlines_total(run)
    with Emulator() as emulator, World(emulator, chosen, speed):
        execution_arn = start_execution(emulator, run)
        description = wait_for(emulator, execution_arn, timeout_seconds, on_event)
        return collect(emulator, execution_arn, description, started)


def _deadlines_total(run_input: dict[str, Any]) -> int:
    """The run's three deadlines added up (what is not a number is the workflow's to reject)."""
    expectations = run_input.get("expectations")
    if not isinstance(expectations, dict):
        return 0
    return sum(value for value in expectations.values() if isinstance(value, int))


def state_transitions(events: list[dict[str, Any]]) -> int:
    """The execution's state transitions: how many times it entered a state."""
    return sum(1 for event in events if event["type"].endswith("StateEntered"))
