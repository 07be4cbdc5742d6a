"""One rehearsal: the emulated account, the simulated world, one execution of the real state machine."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalelab_rehearsal import ROOT
from scalelab_rehearsal.aws_time import Workflow, aws_summary, verdict_phase_seconds
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
# The load generator's round is scaled the same way: the world counts the load's requests in a
# world minute's real window, so a round of the template's minute is 60 / speed real seconds,
# and at least the Parameter's MinValue.
LOAD_ROUND_PARAMETER = "LoadRoundSeconds"
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
    # The run modelled on AWS's clock (aws_time.aws_summary), when the world that played it is known.
    aws: dict[str, Any] | None = None
    # What Notify published, and the HTML report fetched through the link in it (or why not).
    notification: str | None = None
    page_path: Path | None = None
    page_error: str | None = None

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


def load_parameters(speed: float = DEFAULT_SPEED) -> dict[str, str]:
    """The template Parameters of the load generator at ``speed``: its round in real seconds."""
    spec = read_template()["Parameters"][LOAD_ROUND_PARAMETER]
    seconds = max(int(spec["MinValue"]), math.ceil(int(spec["Default"]) / speed))
    return {LOAD_ROUND_PARAMETER: str(seconds)}


def merged_input(
    overrides: dict[str, Any] | None, speed: float = DEFAULT_SPEED, scenario: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The rehearsal's defaults at ``speed``, the ``scenario``'s input (``World.run_input``) over
    them, and a person's input over that, section by section."""
    merged = rehearsal_input(speed)
    for layer in (scenario or {}, overrides or {}):
        for section, values in layer.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section] = {**merged[section], **values}
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
        # moto answers every look at the history with all of it (no paging): only when someone
        # follows the events.
        if on_event is not None:
            events = history(emulator, execution_arn)
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


def collect(
    emulator: Emulator,
    execution_arn: str,
    description: dict[str, Any],
    started: float,
    world: World | None = None,
) -> Outcome:
    """The verdict from the execution's output or last Judge result, and the report copied locally
    (with the run's modelled time on AWS beside the rehearsal's, when ``world`` played it)."""
    events = history(emulator, execution_arn)
    verdict = _verdict_from(events)
    run_id = execution_arn.rsplit(":", 1)[-1]
    aws = (
        aws_summary(events, Workflow.from_template(read_template()), world.lab_settings)
        if world is not None
        else None
    )
    report_path = None
    if verdict and verdict.get("report"):
        location = verdict["report"]
        body = emulator.client("s3").get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
        REPORTS_DIR.mkdir(parents=True, exist_ok=True)
        report_path = REPORTS_DIR / f"{verdict['run_id']}.json"
        report_path.write_bytes(body if aws is None else _with_aws_times(body, aws))
        run_id = verdict["run_id"]
    notification = _notification(events)
    page_path, page_error = _fetch_page(notification, run_id)
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
        aws=aws,
        notification=notification,
        page_path=page_path,
        page_error=page_error,
    )


def _with_aws_times(body: bytes, aws: dict[str, Any]) -> bytes:
    """The rehearsal's copy of the report: each timeline phase with its modelled time on AWS
    beside the rehearsal's, and the whole model under ``modelled_on_aws``. The deployed Judge
    knows nothing of rehearsals; only this copy carries it."""
    report = json.loads(body)
    for phase in report.get("verdict", {}).get("timeline", []):
        phase["aws_seconds"] = verdict_phase_seconds(phase["name"], aws)
    report["modelled_on_aws"] = aws
    return json.dumps(report, indent=2, sort_keys=True).encode()


def _notification(events: list[dict[str, Any]]) -> str | None:
    """The message the Notify state published to the topic."""
    for event in reversed(events):
        details = event.get("taskScheduledEventDetails")
        if details and details.get("resourceType") == "sns":
            message = json.loads(details.get("parameters", "{}")).get("Message")
            return message if isinstance(message, str) else None
    return None


def _fetch_page(notification: str | None, run_id: str) -> tuple[Path | None, str | None]:
    """Open the report's link as the person who got the notification would, and keep the page.

    The link is pre-signed with PublishReport's role: fetching it is decided on that role's permissions,
    as a pre-signed URL is on AWS.
    """
    found = re.search(r"^Report \(a web page\): (\S+)$", notification or "", re.MULTILINE)
    if found is None:
        return None, "the notification has no link to the report"
    try:
        # No proxy: the link is the emulator's, on this machine.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(found.group(1), timeout=10) as answer:
            body = answer.read()
    except urllib.error.HTTPError as error:
        return None, f"the report's link answered {error.code}: {error.read()[:300]!r}"
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    page_path = REPORTS_DIR / f"{run_id}.html"
    page_path.write_bytes(body)
    return page_path, None


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
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout_seconds: float | None = None,
    on_start: Callable[[str], None] | None = None,
) -> Outcome:
    """Rehearse one lab run end to end and return its outcome; the emulator is gone afterwards.

    ``on_start`` is given the execution's ARN once it has started, ``on_event`` each event of its
    history as it comes. Without ``timeout_seconds``, the wait lasts as long as the run's
    deadlines allow, and then some.
    """
    started = time.monotonic()
    chosen = scenario_named(scenario)
    speed = speed or DEFAULT_SPEED
    with Emulator(load_parameters(speed)) as emulator, World(emulator, chosen, speed) as world:
        run = merged_input(run_input, speed, world.run_input)
        if timeout_seconds is None:
            timeout_seconds = EXECUTION_SLACK_SECONDS + _deadlines_total(run)
        execution_arn = start_execution(emulator, run)
        if on_start is not None:
            on_start(execution_arn)
        description = wait_for(emulator, execution_arn, timeout_seconds, on_event)
        return collect(emulator, execution_arn, description, started, world)


def _deadlines_total(run_input: dict[str, Any]) -> int:
    """The run's three deadlines added up (what is not a number is the workflow's to reject)."""
    expectations = run_input.get("expectations")
    if not isinstance(expectations, dict):
        return 0
    return sum(value for value in expectations.values() if isinstance(value, int))


def state_transitions(events: list[dict[str, Any]]) -> int:
    """The execution's state transitions: how many times it entered a state."""
    return sum(1 for event in events if event["type"].endswith("StateEntered"))
