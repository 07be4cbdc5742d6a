"""The model of a run's time on AWS (scalelab_rehearsal.aws_time): deterministic figures from the
phases a rehearsal went through, the world's AWS timings and the settings Provision made."""

from __future__ import annotations

import pytest
from scalelab_rehearsal.aws_time import (
    POLL_STEP_SECONDS,
    STEP_SECONDS,
    PhaseRun,
    Workflow,
    _replay,
    minutes_text,
    model,
    until_torn_down,
    verdict_phase_seconds,
)
from scalelab_rehearsal.deploy import read_template
from scalelab_rehearsal.world.health import BOOT_SECONDS, LabSettings
from scalelab_rehearsal.world.timings import (
    ALARM_DATAPOINTS,
    DATAPOINT_SECONDS,
    EVENT_DELIVERY_SECONDS,
    INSTANCE_BOOT_SECONDS,
    LOAD_BALANCER_ACTIVE_SECONDS,
    healthy_after,
)

from scalelab.steps import provision

PASS_PHASES = [
    "prepare",
    "provision",
    "wait_healthy",
    "probe",
    "stress",
    "scale_out",
    "new_instance_healthy",
    "stop_stress",
    "judge",
    "teardown",
    "notify",
]
# Issue 14, goal 1: from the execution's start to teardown done, with the template's defaults.
VERDICT_BUDGET_SECONDS = 7 * 60


def provisioned_settings() -> LabSettings:
    """What Provision configures, from its own constants (the world reads them off the resources)."""
    return LabSettings(
        health_check_interval=provision.HEALTH_CHECK_INTERVAL_SECONDS,
        healthy_threshold=provision.HEALTHY_THRESHOLD,
        deregistration_delay=provision.DEREGISTRATION_DELAY_SECONDS,
        instance_warmup=provision.INSTANCE_WARMUP_SECONDS,
    )


def passed(*names: str) -> list[PhaseRun]:
    return [PhaseRun(name, "done") for name in names]


def lengths(
    workflow: Workflow, settings: LabSettings, phases: list[PhaseRun], entered: set[str] | None = None
) -> dict[str, float]:
    return {phase.name: phase.aws_seconds for phase in model(phases, entered or set(), workflow, settings)}


def test_a_passing_run_with_the_templates_defaults_is_torn_down_within_seven_minutes_on_aws() -> None:
    modelled = model(
        passed(*PASS_PHASES), set(), Workflow.from_template(read_template()), provisioned_settings()
    )

    assert [phase.name for phase in modelled] == PASS_PHASES
    assert until_torn_down(modelled) < VERDICT_BUDGET_SECONDS, minutes_text(until_torn_down(modelled))


def test_a_wait_ends_at_the_first_poll_that_sees_what_it_waits_for() -> None:
    workflow = Workflow(
        poll_seconds=10, healthy_within=600, scale_out_within=900, new_instance_healthy_within=600
    )
    settings = LabSettings(
        health_check_interval=5, healthy_threshold=2, deregistration_delay=0, instance_warmup=0
    )

    waited = lengths(workflow, settings, passed("prepare", "provision", "wait_healthy"))["wait_healthy"]

    # Healthy this long after Provision ended. The first check runs then, cold; each later one
    # runs a Wait of 10 s and a warm check after the one before, and sees the state at its start.
    healthy = max(BOOT_SECONDS, LOAD_BALANCER_ACTIVE_SECONDS) + healthy_after(2, 5)
    check_starts = STEP_SECONDS["check"] + 10
    while check_starts < healthy:
        check_starts += POLL_STEP_SECONDS + 10
    assert waited == pytest.approx(check_starts + POLL_STEP_SECONDS)


def test_a_shorter_poll_and_health_check_shorten_the_wait() -> None:
    phases = passed("prepare", "provision", "wait_healthy")
    slow = lengths(Workflow(15, 600, 900, 600), LabSettings(10, 2, 30, 0), phases)["wait_healthy"]
    fast = lengths(Workflow(2, 600, 900, 600), LabSettings(5, 2, 0, 0), phases)["wait_healthy"]

    assert fast < slow


def test_targets_that_never_become_healthy_end_the_wait_at_the_templates_deadline() -> None:
    workflow = Workflow(
        poll_seconds=5, healthy_within=600, scale_out_within=900, new_instance_healthy_within=600
    )
    phases = [*passed("prepare", "provision"), PhaseRun("wait_healthy", "failed", "TargetsNotHealthy")]

    waited = lengths(workflow, provisioned_settings(), phases)["wait_healthy"]

    assert 600 <= waited <= 600 + 5 + 2 * POLL_STEP_SECONDS + STEP_SECONDS["check"]


def test_the_scale_out_comes_three_datapoints_after_the_stress_then_through_eventbridge() -> None:
    workflow = Workflow.from_template(read_template())

    waited = lengths(workflow, provisioned_settings(), passed(*PASS_PHASES))["scale_out"]

    assert waited == pytest.approx(
        ALARM_DATAPOINTS * DATAPOINT_SECONDS + EVENT_DELIVERY_SECONDS + STEP_SECONDS["on_scaling_event"]
    )


def test_instances_still_warming_up_when_the_stress_starts_delay_the_alarm() -> None:
    workflow = Workflow.from_template(read_template())
    settings = provisioned_settings()
    warm = lengths(workflow, settings, passed(*PASS_PHASES))
    warming = LabSettings(
        settings.health_check_interval, settings.healthy_threshold, settings.deregistration_delay, 600
    )

    late = lengths(workflow, warming, passed(*PASS_PHASES))

    # The first instances launch as Provision ends, are InService after their boot, and count
    # towards the alarm only once warm; the stress itself started this long into the run.
    warmed_at = STEP_SECONDS["prepare"] + STEP_SECONDS["provision"] + INSTANCE_BOOT_SECONDS + 600
    stress_started = sum(warm[name] for name in ("prepare", "provision", "wait_healthy", "probe", "stress"))
    assert late["scale_out"] == pytest.approx(warm["scale_out"] + warmed_at - stress_started)


def test_a_scale_out_found_by_the_fallback_ends_at_the_waits_deadline() -> None:
    workflow = Workflow(
        poll_seconds=2, healthy_within=600, scale_out_within=900, new_instance_healthy_within=600
    )

    waited = lengths(workflow, provisioned_settings(), passed(*PASS_PHASES), {"CheckScaleOut"})["scale_out"]

    assert waited == pytest.approx(900 + STEP_SECONDS["check"])


def test_a_lab_never_provisioned_is_torn_down_in_one_pass() -> None:
    phases = [
        PhaseRun("prepare", "done"),
        PhaseRun("provision", "failed", "ForeignResource"),
        *passed("judge", "teardown"),
    ]

    torn = lengths(Workflow(2, 600, 900, 600), provisioned_settings(), phases)["teardown"]

    assert torn == STEP_SECONDS["teardown"]


def test_the_verdicts_phases_are_measured_between_the_modelled_moments() -> None:
    aws = {
        "marks": {
            "started": 0.0,
            "provisioned": 4.0,
            "healthy": 100.0,
            "stress_started": 103.0,
            "launched": 283.0,
        },
        "phases": [{"name": "teardown", "aws_seconds": 46.0}],
    }

    assert verdict_phase_seconds("provision", aws) == 4.0
    assert verdict_phase_seconds("wait_healthy", aws) == 96.0
    assert verdict_phase_seconds("stress_to_scale_out", aws) == 180.0
    assert verdict_phase_seconds("new_instance_healthy", aws) is None  # never healthy
    assert verdict_phase_seconds("teardown", aws) == 46.0


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 min 0 s"), (59.6, "1 min 0 s"), (414, "6 min 54 s")])
def test_minutes_text(seconds: float, text: str) -> None:
    assert minutes_text(seconds) == text


def test_a_scale_in_waits_for_the_scale_in_alarm_the_deregistration_and_the_termination() -> None:
    workflow = Workflow(
        poll_seconds=2, healthy_within=600, scale_out_within=900, new_instance_healthy_within=600
    )
    settings = provisioned_settings()
    phases = passed(*PASS_PHASES[:8], "scale_in", *PASS_PHASES[8:])

    modelled, marks = _replay(phases, set(), workflow, settings)
    scale_in = next(phase for phase in modelled if phase.name == "scale_in")

    gone = 15 * 60 + provision.DEREGISTRATION_DELAY_SECONDS + 30
    assert marks["scaled_in"] - marks["load_stopped"] == pytest.approx(gone, abs=0.1)
    assert gone + 1 <= scale_in.aws_seconds <= gone + 1 + workflow.poll_seconds + 1
    assert scale_in.ended_by.startswith("the scale-in alarm: 15 datapoints of 60 s")
    assert verdict_phase_seconds("load_stopped_to_scale_in", {"marks": marks, "phases": []}) == pytest.approx(
        gone, abs=0.1
    )
