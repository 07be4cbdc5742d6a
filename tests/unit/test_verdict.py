"""Judge: the verdict and its reason for every way a run can end, the report, the record, the metrics."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from scalelab.contracts.judge import JudgeEvent
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.run import RunConfig
from scalelab.core.clock import utc_iso
from scalelab.core.settings import ReportSettings
from scalelab.steps.verdict import judge_run
from scalelab.store.runs import RunTable

RUN = "judge-0001"
BUCKET = "scalelab-test-reports"
T0 = 1_800_000_000.0


@pytest.fixture
def settings(account: None) -> ReportSettings:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return ReportSettings(REPORTS_BUCKET=BUCKET)


def at(seconds: float) -> str:
    return utc_iso(T0 + seconds)


def snapshot(expectation: str, met: bool, checked: float) -> dict[str, Any]:
    return {
        "expectation": expectation,
        "expectation_met": met,
        "counts": {"healthy": 2},
        "healthy_instances": ["i-0000000000000000a", "i-0000000000000000b"],
        "targets": {},
        "checked_at": at(checked),
        "elapsed_seconds": 0,
        "deadline_at": at(checked),
    }


def full_run(config: RunConfig, lab: ProvisionResult) -> dict[str, Any]:
    """A state in which every expectation was met, on a made-up clock starting at T0."""
    return {
        "config": {**config.model_dump(mode="json"), "started_at": at(0)},
        "provision": {**lab.model_dump(mode="json"), "provisioned_at": at(60)},
        "healthy": snapshot("2 healthy targets", True, 150),
        "probe": {
            "passed": True,
            "reason": "20/20 answers were 2xx from 2 instances",
            "instances": ["a", "b"],
        },
        "stress": {"command_id": "c-1", "instance_ids": ["a", "b"], "started_at": at(160)},
        "scale_out": {"instance_id": "i-0000000000000000c", "launched_at": at(400), "event_id": "e-1"},
        "new_healthy": snapshot("instance i-0000000000000000c healthy", True, 470),
    }


def judge(state: dict[str, Any], run_table: RunTable, settings: ReportSettings) -> Any:
    return judge_run(JudgeEvent.model_validate(state), run_table, settings, now=T0 + 500)


def test_a_run_that_met_every_expectation_passes_with_its_timeline(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    verdict = judge(full_run(config, lab), run_table, settings)

    assert verdict.passed is True
    assert verdict.reason.startswith("passed: 2 healthy targets 90 s after provisioning")
    assert verdict.diagnosis == []
    assert [(phase.name, phase.seconds) for phase in verdict.timeline] == [
        ("provision", 60),
        ("wait_healthy", 90),
        ("stress_to_scale_out", 240),
        ("new_instance_healthy", 70),
    ]
    report = json.loads(
        boto3.client("s3").get_object(Bucket=BUCKET, Key=f"reports/default/{RUN}.json")["Body"].read()
    )
    assert report["verdict"]["passed"] is True
    record = run_table.load_run(RUN)
    assert record is not None
    assert record.status == "passed"


def test_no_scale_out_says_how_the_group_stayed(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    del state["scale_out"], state["new_healthy"]
    state["error"] = {"Error": "States.Timeout", "Cause": "the task timed out"}

    verdict = judge(state, run_table, settings)

    assert verdict.passed is False
    # The policy's alarms exist (target tracking makes them); no datapoint has reached them yet.
    assert verdict.reason.startswith(
        "failed at scale_out: no scale-out within 900 s: group stayed at 2/4 instances (desired 2); "
        "last scale-out alarm state: INSUFFICIENT_DATA; diagnosis: "
    )
    # This made-up state's command id is not one SSM accepts.
    assert verdict.reason.endswith("; diagnosis: whether the stress ran could not be read")
    record = run_table.load_run(RUN)
    assert record is not None
    assert record.status == "failed"
    assert record.reason == verdict.reason


def test_a_failed_launch_gives_aws_status_message(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    del state["scale_out"], state["new_healthy"]
    state["error"] = {
        "Error": "ScaleOutFailed",
        "Cause": "We currently do not have sufficient t3.micro capacity",
    }

    verdict = judge(state, run_table, settings)

    assert verdict.reason == (
        "failed at scale_out: scale-out failed: We currently do not have sufficient t3.micro capacity"
    )


def test_a_late_scale_out_fails(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    state["scale_out"]["launched_at"] = at(160 + 901)

    verdict = judge(state, run_table, settings)

    assert verdict.passed is False
    assert "launched 901 s after stress started, later than the 900 s expected" in verdict.reason


def test_targets_never_healthy_carries_the_last_snapshot(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    for later in ("healthy", "probe", "stress", "scale_out", "new_healthy"):
        del state[later]
    state["error"] = {
        "Error": "TargetsNotHealthy",
        "Cause": "expected 2 healthy targets within 600 s, but 2 unhealthy",
    }

    verdict = judge(state, run_table, settings)

    assert verdict.reason == (
        "failed at healthy: targets not healthy within 600 s "
        "(TargetsNotHealthy: expected 2 healthy targets within 600 s, but 2 unhealthy)"
    )
    assert [phase.name for phase in verdict.timeline] == ["provision"]


def test_a_failed_probe_fails_the_run_with_the_probes_reason(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    state["probe"] = {"passed": False, "reason": "only i-0000000000000000a answered; 2 are healthy"}

    verdict = judge(state, run_table, settings)

    assert verdict.reason == "failed at probe: only i-0000000000000000a answered; 2 are healthy"


def test_a_lab_that_was_never_provisioned_is_judged_too(
    config: RunConfig, run_table: RunTable, settings: ReportSettings
) -> None:
    state = {
        "config": config.model_dump(mode="json"),
        "error": {"Error": "ForeignResource", "Cause": "security group sg-1 has this run's name"},
    }

    verdict = judge(state, run_table, settings)

    assert verdict.passed is False
    assert verdict.reason.startswith("failed at provisioned: the lab was not provisioned (ForeignResource:")


def test_the_judge_handler_emits_the_timings_as_metrics(
    config: RunConfig,
    lab: ProvisionResult,
    settings: ReportSettings,
    load_handler: Any,
    lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = load_handler("JudgeRunFunction")

    verdict = handler.lambda_handler(full_run(config, lab), lambda_context)

    assert verdict["passed"] is True
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(blobs) == 1
    emitted = blobs[0]
    assert emitted["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "scalelab"
    assert emitted["lab"] == "default"
    assert emitted["TimeToHealthySeconds"] == [90.0]
    assert emitted["StressToScaleOutSeconds"] == [240.0]
    assert emitted["NewInstanceToHealthySeconds"] == [70.0]
    assert emitted["VerdictPassed"] == [1.0]


def test_a_lambda_errors_json_cause_is_read_for_its_message(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    for later in ("healthy", "probe", "stress", "scale_out", "new_healthy"):
        del state[later]
    cause = {"errorMessage": "expected 2 healthy targets within 600 s", "errorType": "TargetsNotHealthy"}
    state["error"] = {"Error": "TargetsNotHealthy", "Cause": json.dumps(cause)}

    verdict = judge(state, run_table, settings)

    assert verdict.reason == (
        "failed at healthy: targets not healthy within 600 s "
        "(TargetsNotHealthy: expected 2 healthy targets within 600 s)"
    )


def test_a_failure_without_a_cause_still_gets_a_verdict(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    del state["scale_out"], state["new_healthy"]
    state["error"] = {"Error": "ScaleOutFailed", "Cause": None}

    verdict = judge(state, run_table, settings)

    assert verdict.reason == "failed at scale_out: scale-out failed: no reason given"


def test_a_scale_out_after_unsuccessful_launches_passes_naming_them_and_aws_reasons(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    unsupported = (
        "Your requested instance type (t3.micro) is not supported in your requested Availability Zone"
    )
    capacity = "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested"
    state["scale_out"] |= {
        "availability_zone": "us-east-1b",
        "unsuccessful_launches": 5,
        "unsuccessful": [
            {"availability_zone": "us-east-1a", "status_message": unsupported},
            {"availability_zone": "us-east-1c", "status_message": capacity},
        ],
    }

    verdict = judge(state, run_table, settings)

    assert verdict.passed is True
    (scale_out,) = [check.detail for check in verdict.checks if check.name == "scale_out"]
    assert scale_out == (
        "i-0000000000000000c launched in us-east-1b 240 s after stress started, after 5 unsuccessful "
        f"launches in us-east-1a, us-east-1c: {unsupported!r}; {capacity!r} (and 3 more)"
    )
    assert scale_out in verdict.reason


def test_the_timeline_never_ends_a_phase_before_it_starts(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    # Issue 15 #11: the launch time kept its fraction of a second, the health check's did not,
    # so an instance healthy in the same second it launched ended its phase before it began.
    state = full_run(config, lab)
    state["scale_out"]["launched_at"] = "2027-01-15T08:06:40.700000+00:00"
    state["new_healthy"]["checked_at"] = "2027-01-15T08:06:40+00:00"

    verdict = judge(state, run_table, settings)

    phase = next(phase for phase in verdict.timeline if phase.name == "new_instance_healthy")
    assert phase.started_at <= phase.ended_at
    assert phase.seconds == 0
    assert all(
        phase.started_at.endswith("+00:00") and "." not in phase.started_at for phase in verdict.timeline
    )


def _waiting_for_the_scale_in(config: RunConfig, lab: ProvisionResult, within: int) -> dict[str, Any]:
    state = full_run(config, lab)
    state["config"]["expectations"]["scale_in_within_seconds"] = within
    state["stress_stop"] = {"command_id": "c-1", "cancelled": True, "status": "Cancelled"}
    state["scale_in_wait"] = {"load_stopped_at": at(480)}
    return state


def test_a_scale_in_in_time_passes_with_its_phase_in_the_timeline(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = _waiting_for_the_scale_in(config, lab, 1800)
    state["scale_in"] = {
        "expectation_met": True,
        "checked_at": at(1500),
        "instance_id": "i-0000000000000000a",
        "scaled_in_at": at(1480),
        "seen_in": "event",
        "capacity_change": "from 3 to 2",
    }

    verdict = judge(state, run_table, settings)

    assert verdict.passed is True
    assert verdict.checks[-1].name == "scale_in"
    assert verdict.reason.endswith(
        "; i-0000000000000000a terminated 1000 s after the load stopped (desired capacity from 3 to 2)"
    )
    assert (verdict.timeline[-1].name, verdict.timeline[-1].seconds) == ("load_stopped_to_scale_in", 1000)


def test_a_late_scale_in_fails_and_a_missing_one_quotes_no_scale_in(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    late = _waiting_for_the_scale_in(config, lab, 900)
    late["scale_in"] = {
        "expectation_met": True,
        "checked_at": at(1500),
        "instance_id": "i-0000000000000000a",
        "scaled_in_at": at(1481),
        "seen_in": "scaling_activities",
        "capacity_change": "from 3 to 2",
    }
    never = _waiting_for_the_scale_in(config, lab, 900)
    message = "no scale-in within 900 s: the group stayed at 3 instances (desired 3, 2 before the scale-out)"
    never["error"] = {"Error": "NoScaleIn", "Cause": json.dumps({"errorMessage": message})}

    assert judge(late, run_table, settings).reason == (
        "failed at scale_in: i-0000000000000000a terminated 1001 s after the load stopped (desired capacity "
        "from 3 to 2), later than the 900 s expected (seen in the group's scaling activities: no Auto "
        "Scaling event reported it)"
    )
    assert judge(never, run_table, settings).reason == f"failed at scale_in: {message}"
