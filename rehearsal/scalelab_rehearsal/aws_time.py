"""How long a rehearsed run would take on AWS, modelled phase by phase.

The rehearsal's own clock cannot say: the world plays AWS ``speed`` times
faster, but the handlers, the state machine's Wait states and the rehearsal's
deadlines run in real seconds (a poll a second, deadlines of at least 8 s), so
the world's raw clock counts every real second of Lambda and polling ``speed``
times over. Instead the model replays the phases the rehearsal went through, in
order, on AWS's clock:

- a Lambda step takes ``STEP_SECONDS`` (this project's estimate, cold start
  included; a warm poll ``POLL_STEP_SECONDS``);
- a wait phase ends when what it waits for happens on AWS (the world's figures
  in ``world.timings`` and the settings Provision made, as the world saw
  them), seen at the first poll at or after it: the workflow polls every
  ``PollSeconds`` (the template's default, what the Wait states wait on AWS)
  plus the check's own Lambda step; a phase that ran out of time ends at its
  template deadline;
- the scale-out ends when the launch event reaches the waiting task: the alarm's
  datapoints after the stress started (or after the instances warmed up, if
  later), then EventBridge and OnScalingEvent.

It is deterministic: the same phases and settings give the same figure, so a
test can hold the defaults to a budget. docs/rehearsal.md explains it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scalelab_rehearsal.progress import tracked
from scalelab_rehearsal.world.health import (
    BOOT_SECONDS,
    DEREGISTRATION_DELAY_SECONDS,
    HEALTH_INTERVAL_SECONDS,
    HEALTHY_THRESHOLD,
    LabSettings,
)
from scalelab_rehearsal.world.timings import (
    ALARM_DATAPOINTS,
    DATAPOINT_SECONDS,
    EVENT_DELIVERY_SECONDS,
    FALLBACK_WARMUP_SECONDS,
    INSTANCE_BOOT_SECONDS,
    INSTANCE_TERMINATION_SECONDS,
    LOAD_BALANCER_ACTIVE_SECONDS,
    LOAD_BALANCER_RELEASE_SECONDS,
    SCALE_IN_ALARM_DATAPOINTS,
    healthy_after,
)

# One Lambda step on AWS, cold start included (this project's estimate): a few AWS calls
# each; Provision makes about twenty, the probe twenty HTTP requests.
STEP_SECONDS = {
    "prepare": 1.0,
    "provision": 3.0,
    "probe": 1.5,
    "stress": 1.0,
    "stop_stress": 1.0,
    "judge": 1.5,
    "notify": 2.0,  # PublishReport drawing and writing the page (1.5 s), then the SNS publish
    "check": 1.0,  # CheckTargets' first call, CheckScaleOut
    "await_scale_out": 1.0,  # the task's Lambda storing the token
    "on_scaling_event": 1.0,
    "teardown": 1.0,
}
# A poll of a function already warm: one or a few AWS calls.
POLL_STEP_SECONDS = 0.5
# The phases that end when AWS has done something; the others are one Lambda step.
WAITS = frozenset({"wait_healthy", "scale_out", "new_instance_healthy", "scale_in", "teardown"})
# The scale-in deadline a failed scale-in is modelled with: the input has no default for it
# (expectations.scale_in_within_seconds is absent unless a run sets it).
MODELLED_SCALE_IN_WITHIN_SECONDS = 1800.0


@dataclass(frozen=True)
class Workflow:
    """What the workflow does on AWS with the template's defaults."""

    poll_seconds: float  # PollSeconds: the Wait states between two polls
    healthy_within: float  # HealthyWithinSeconds
    scale_out_within: float  # ScaleOutWithinSeconds
    new_instance_healthy_within: float  # NewInstanceHealthyWithinSeconds

    @classmethod
    def from_template(cls, template: dict[str, Any]) -> Workflow:
        parameters = template["Parameters"]

        def default(name: str) -> float:
            return float(parameters[name]["Default"])

        return cls(
            poll_seconds=default("PollSeconds"),
            healthy_within=default("HealthyWithinSeconds"),
            scale_out_within=default("ScaleOutWithinSeconds"),
            new_instance_healthy_within=default("NewInstanceHealthyWithinSeconds"),
        )


@dataclass(frozen=True)
class ModelledPhase:
    name: str
    aws_seconds: float
    ended_by: str


@dataclass(frozen=True)
class PhaseRun:
    """A phase as the rehearsal ran it: its name, how it ended, and the states it entered."""

    name: str
    status: str  # done, failed
    error: str | None = None


def phases_of(history: Iterable[dict[str, Any]]) -> tuple[list[PhaseRun], set[str]]:
    """The phases an execution went through, in order, and every state it entered."""
    events = list(history)
    tracker = tracked(events)
    entered = {
        event.get("stateEnteredEventDetails", {}).get("name", "")
        for event in events
        if event["type"].endswith("StateEntered")
    }
    ran = [
        PhaseRun(phase.spec.key, phase.status, phase.error)
        for phase in sorted(
            (phase for phase in tracker.phases if phase.started_at is not None),
            key=lambda phase: phase.started_at,  # type: ignore[arg-type,return-value]
        )
    ]
    return ran, entered


class _Clock:
    """AWS's clock for one modelled run."""

    def __init__(self, workflow: Workflow, settings: LabSettings) -> None:
        self.workflow = workflow
        self.interval = settings.health_check_interval or HEALTH_INTERVAL_SECONDS
        self.threshold = settings.healthy_threshold or HEALTHY_THRESHOLD
        delay = settings.deregistration_delay
        self.deregistration = DEREGISTRATION_DELAY_SECONDS if delay is None else delay
        warmup = settings.instance_warmup
        self.warmup = FALLBACK_WARMUP_SECONDS if warmup is None else warmup
        self.now = 0.0
        self.launched: float | None = None  # the first instances and the load balancer
        self.provisioned = False
        self.stress_started: float | None = None
        self.scaled_out: float | None = None  # the new instance's launch
        self.scaled_in: float | None = None  # the scale-in's instance terminated

    def poll_until(self, ready: float, step: float) -> float:
        """The end of a Wait/Choice loop waiting for ``ready``: a check of ``step`` seconds now,
        then a Wait of PollSeconds and a warm check, again and again; a check sees the state
        at its start."""
        if ready <= self.now:
            return self.now + step
        period = self.workflow.poll_seconds + POLL_STEP_SECONDS
        # The k-th check after the first starts at now + step + k * period - POLL_STEP_SECONDS.
        polls = max(1, math.ceil((ready - (self.now + step - POLL_STEP_SECONDS)) / period))
        return self.now + step + polls * period


def model(
    phases: list[PhaseRun], entered: set[str], workflow: Workflow, settings: LabSettings
) -> list[ModelledPhase]:
    """Each phase's modelled length on AWS, in the order the rehearsal ran them."""
    return _replay(phases, entered, workflow, settings)[0]


def _replay(
    phases: list[PhaseRun], entered: set[str], workflow: Workflow, settings: LabSettings
) -> tuple[list[ModelledPhase], dict[str, float]]:
    """The modelled phases, and the moments (seconds from the execution's start) the verdict's
    timeline is measured between."""
    clock = _Clock(workflow, settings)
    modelled = []
    marks = {"started": 0.0}
    for phase in phases:
        started = clock.now
        ended_by = _advance(clock, phase, entered)
        modelled.append(ModelledPhase(phase.name, round(clock.now - started, 1), ended_by))
        if phase.name == "provision":
            marks["provisioned"] = clock.now
        elif phase.name == "stress":
            marks["stress_started"] = clock.now
        elif phase.name == "scale_out" and clock.scaled_out is not None:
            marks["launched"] = clock.scaled_out
        elif phase.name in {"wait_healthy", "new_instance_healthy"} and phase.status == "done":
            marks["healthy" if phase.name == "wait_healthy" else "new_healthy"] = clock.now
        elif phase.name == "scale_in":
            marks["load_stopped"] = started
            if clock.scaled_in is not None:
                marks["scaled_in"] = clock.scaled_in
    return modelled, {name: round(moment, 1) for name, moment in marks.items()}


# The verdict's timeline (Judge's own phases): between which modelled moments each lies.
VERDICT_PHASES = {
    "provision": ("started", "provisioned"),
    "wait_healthy": ("provisioned", "healthy"),
    "stress_to_scale_out": ("stress_started", "launched"),
    "new_instance_healthy": ("launched", "new_healthy"),
    "load_stopped_to_scale_in": ("load_stopped", "scaled_in"),
}


def verdict_phase_seconds(name: str, aws: dict[str, Any]) -> float | None:
    """A phase of the verdict's timeline, modelled on AWS, from ``aws_summary``'s marks."""
    if name in VERDICT_PHASES:
        begin, end = VERDICT_PHASES[name]
        marks = aws["marks"]
        if begin in marks and end in marks:
            return round(float(marks[end] - marks[begin]), 1)
        return None
    return next((phase["aws_seconds"] for phase in aws["phases"] if phase["name"] == name), None)


def _advance(clock: _Clock, phase: PhaseRun, entered: set[str]) -> str:
    """Move the clock to the phase's end on AWS; say what ended it."""
    if phase.name not in WAITS:
        clock.now += STEP_SECONDS.get(phase.name, STEP_SECONDS["check"])
        if phase.name == "provision":
            # The load balancer and the group (its first instances) are created at its end.
            clock.launched = clock.now
            clock.provisioned = phase.status == "done"
        elif phase.name == "stress":
            clock.stress_started = clock.now
        return "one Lambda step"
    if phase.name == "wait_healthy":
        return _wait_healthy(clock, phase, clock.launched, first=True)
    if phase.name == "new_instance_healthy":
        return _wait_healthy(clock, phase, clock.scaled_out, first=False)
    if phase.name == "scale_out":
        return _scale_out(clock, phase, entered)
    if phase.name == "scale_in":
        return _scale_in(clock, phase)
    return _teardown(clock)


def _wait_healthy(clock: _Clock, phase: PhaseRun, launched: float | None, *, first: bool) -> str:
    since = clock.now if launched is None else launched
    if phase.status != "done":
        if phase.error != "TargetsNotHealthy":
            clock.now += STEP_SECONDS["check"]
            return f"{phase.error or 'an error'} at the first check"
        within = clock.workflow.healthy_within if first else clock.workflow.new_instance_healthy_within
        clock.now = clock.poll_until(since + within, STEP_SECONDS["check"] if first else POLL_STEP_SECONDS)
        return f"the deadline ({within:.0f} s)"
    checks = healthy_after(clock.threshold, clock.interval)
    app_up = since + BOOT_SECONDS
    if first:
        ready = max(app_up, since + LOAD_BALANCER_ACTIVE_SECONDS) + checks
        what = (
            f"targets healthy: the later of boot and user data ({BOOT_SECONDS:.0f} s) and the load "
            f"balancer active ({LOAD_BALANCER_ACTIVE_SECONDS:.0f} s), then {clock.threshold} checks "
            f"{clock.interval:.0f} s apart"
        )
    else:
        ready = app_up + checks
        what = (
            f"new instance healthy: boot and user data ({BOOT_SECONDS:.0f} s), then {clock.threshold} "
            f"checks {clock.interval:.0f} s apart"
        )
    clock.now = clock.poll_until(ready, STEP_SECONDS["check"] if first else POLL_STEP_SECONDS)
    return f"{what}; polled every {clock.workflow.poll_seconds:.0f} s"


def _scale_out(clock: _Clock, phase: PhaseRun, entered: set[str]) -> str:
    stress = clock.now if clock.stress_started is None else clock.stress_started
    launched = clock.launched if clock.launched is not None else stress
    # Warming instances add nothing to the group's CPU: the datapoints count from the later.
    counted_from = max(stress, launched + INSTANCE_BOOT_SECONDS + clock.warmup)
    alarm = counted_from + ALARM_DATAPOINTS * DATAPOINT_SECONDS
    if "CheckScaleOut" in entered:
        clock.now = stress + clock.workflow.scale_out_within + STEP_SECONDS["check"]
        clock.scaled_out = alarm if phase.status == "done" else None
        return f"the wait's deadline ({clock.workflow.scale_out_within:.0f} s), then the scaling activities"
    clock.scaled_out = alarm
    clock.now = max(
        clock.now + STEP_SECONDS["await_scale_out"],
        alarm + EVENT_DELIVERY_SECONDS + STEP_SECONDS["on_scaling_event"],
    )
    late = counted_from - stress
    warmed = f", counted from {late:.0f} s in, when the instances had warmed up" if late > 0 else ""
    return (
        f"the scale-out alarm: {ALARM_DATAPOINTS} datapoints of {DATAPOINT_SECONDS:.0f} s{warmed}, "
        "then the launch event through EventBridge"
    )


def _scale_in(clock: _Clock, phase: PhaseRun) -> str:
    if phase.status != "done":
        clock.now = clock.poll_until(clock.now + MODELLED_SCALE_IN_WITHIN_SECONDS, STEP_SECONDS["check"])
        return (
            f"the wait's deadline (modelled as {MODELLED_SCALE_IN_WITHIN_SECONDS:.0f} s), "
            "then the scaling activities"
        )
    # The load stopped now; the scale-in alarm's datapoints, then Auto Scaling deregisters the
    # instance (the deregistration delay) and terminates it; the event follows.
    alarm = clock.now + SCALE_IN_ALARM_DATAPOINTS * DATAPOINT_SECONDS
    clock.scaled_in = alarm + clock.deregistration + INSTANCE_TERMINATION_SECONDS
    clock.now = clock.poll_until(clock.scaled_in + EVENT_DELIVERY_SECONDS, STEP_SECONDS["check"])
    return (
        f"the scale-in alarm: {SCALE_IN_ALARM_DATAPOINTS} datapoints of {DATAPOINT_SECONDS:.0f} s, the "
        f"deregistration delay ({clock.deregistration:.0f} s), the termination "
        f"({INSTANCE_TERMINATION_SECONDS:.0f} s), then the terminate event; polled every "
        f"{clock.workflow.poll_seconds:.0f} s"
    )


def _teardown(clock: _Clock) -> str:
    if not clock.provisioned:
        clock.now += STEP_SECONDS["teardown"]
        return "one pass (the lab was not fully provisioned)"
    # The first pass asks for every deletion; the security groups go once the instances
    # (deregistered, then terminated) and the load balancer's network interfaces are gone.
    group_gone = clock.deregistration + INSTANCE_TERMINATION_SECONDS
    released = clock.now + max(group_gone, LOAD_BALANCER_RELEASE_SECONDS)
    clock.now = clock.poll_until(released, STEP_SECONDS["teardown"])
    return (
        f"the security groups deleted once the instances are gone (deregistration delay "
        f"{clock.deregistration:.0f} s, termination {INSTANCE_TERMINATION_SECONDS:.0f} s) and the load "
        f"balancer's network interfaces released ({LOAD_BALANCER_RELEASE_SECONDS:.0f} s); polled every "
        f"{clock.workflow.poll_seconds:.0f} s"
    )


def total_seconds(modelled: Iterable[ModelledPhase]) -> float:
    return round(sum(phase.aws_seconds for phase in modelled), 1)


def until_torn_down(modelled: Iterable[ModelledPhase]) -> float:
    """From the execution's start to the end of teardown (what the time-to-verdict goal counts)."""
    seconds = 0.0
    for phase in modelled:
        seconds += phase.aws_seconds
        if phase.name == "teardown":
            break
    return round(seconds, 1)


def minutes_text(seconds: float) -> str:
    """``M min S s``, rounded to the second."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def aws_summary(
    history: Iterable[dict[str, Any]], workflow: Workflow, settings: LabSettings
) -> dict[str, Any]:
    """The model of a rehearsed run, as the CLI's --json and the report carry it."""
    phases, entered = phases_of(history)
    modelled, marks = _replay(phases, entered, workflow, settings)
    return {
        "seconds": total_seconds(modelled),
        "until_torn_down_seconds": until_torn_down(modelled),
        "marks": marks,
        "phases": [
            {"name": phase.name, "aws_seconds": phase.aws_seconds, "ended_by": phase.ended_by}
            for phase in modelled
        ],
    }
