"""Every scenario end to end through the real state machine: status, verdict, events, nothing left."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from scalelab_rehearsal.rehearse import Outcome, merged_input
from scalelab_rehearsal.world import CAPACITY_ERROR
from scalelab_rehearsal.world.scenarios import UNSUPPORTED_ERROR

from scalelab.core.naming import run_id_from_execution
from tests.support.account import tagged_resources
from tests.workflow.conftest import Rehearsal

LAUNCH_OK = "EC2 Instance Launch Successful"
LAUNCH_FAILED = "EC2 Instance Launch Unsuccessful"
# A run's Prepare takes its lab's lock within a second or two.
LOCK_DEADLINE_SECONDS = 30.0


def diagnosis_of(outcome: Outcome) -> dict[str, list[str]]:
    """The verdict's diagnosis by finding title, after checking the report holds the same."""
    assert outcome.verdict is not None
    assert outcome.report_path is not None
    findings = outcome.verdict["diagnosis"]
    assert json.loads(outcome.report_path.read_text())["diagnosis"] == findings
    return {finding["title"]: finding["lines"] for finding in findings}


def finding(diagnosis: dict[str, list[str]], title_start: str) -> list[str]:
    return next(lines for title, lines in diagnosis.items() if title.startswith(title_start))


def assert_nothing_left(rehearsal: Rehearsal, outcome: Outcome) -> None:
    assert tagged_resources(outcome.run_id) == {}
    assert rehearsal.lock_holder() is None
    assert "torn_down_at" in rehearsal.run_record(outcome.run_id)


def test_pass_ends_succeeded_with_a_passed_verdict(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-pass")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.verdict is not None
    assert outcome.verdict["passed"] is True
    assert outcome.verdict["reason"].startswith("passed: 2 healthy targets")
    assert " from 2 instances " in outcome.verdict["reason"]
    assert [phase["name"] for phase in outcome.verdict["timeline"]] == [
        "provision",
        "wait_healthy",
        "stress_to_scale_out",
        "new_instance_healthy",
    ]
    assert LAUNCH_OK in rehearsal.logged_event_types(outcome.run_id)
    assert rehearsal.run_record(outcome.run_id)["status"]["S"] == "passed"
    assert outcome.report_path is not None
    assert json.loads(outcome.report_path.read_text())["verdict"]["passed"] is True
    assert diagnosis_of(outcome) == {}
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("never-healthy")
def test_never_healthy_fails_with_the_last_snapshot(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-never-healthy")

    assert outcome.status == "FAILED"
    assert outcome.error == "LabFailed"
    assert outcome.cause is not None
    assert outcome.cause.startswith("failed at healthy: targets not healthy within 8 s (TargetsNotHealthy: ")
    assert "2 unhealthy" in outcome.cause
    assert "; diagnosis: i-" in outcome.cause
    assert " is unhealthy (Target.FailedHealthChecks); its console says: " in outcome.cause
    assert "[PM2][ERROR] Script not found: /opt/scalelab/app.js" in outcome.cause
    diagnosis = diagnosis_of(outcome)
    health = diagnosis["Target health (DescribeTargetHealth)"]
    assert len(health) == 2
    assert all(
        line.endswith(": unhealthy: Target.FailedHealthChecks (Health checks failed with these codes: [502])")
        for line in health
    )
    console = finding(diagnosis, "Console output of i-")
    assert console[-2].endswith("Failed running /var/lib/cloud/instance/scripts/part-001 [1]")
    # The notification carries the diagnosis under the reason.
    (published,) = [
        json.loads(event["taskScheduledEventDetails"]["parameters"])
        for event in outcome.history
        if event.get("taskScheduledEventDetails", {}).get("resourceType") == "sns"
    ]
    message = published["Message"]
    assert message.startswith(f"FAILED: scalelab run {outcome.run_id} ")
    assert outcome.verdict["reason"] in message
    for found in outcome.verdict["diagnosis"]:
        assert "\n".join([f"{found['title']}:", *found["lines"]]) in message
    assert rehearsal.logged_event_types(outcome.run_id) == []
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("no-scale-out")
def test_no_scale_out_says_how_the_group_stayed(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-no-scale-out")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith(
        "failed at scale_out: no scale-out within 8 s: group stayed at 2/4 instances"
    )
    assert (
        "; last scale-out alarm state: OK; diagnosis: the group's average CPU reached at most 3.0 % "
        "(target 50 % average CPU)" in (outcome.cause)
    )
    assert_the_stress_ran_but_the_cpu_stayed_low(diagnosis_of(outcome))
    assert LAUNCH_OK not in rehearsal.logged_event_types(outcome.run_id)
    assert_nothing_left(rehearsal, outcome)


def assert_the_stress_ran_but_the_cpu_stayed_low(diagnosis: dict[str, list[str]]) -> None:
    policy = finding(diagnosis, "Scaling policy and its alarms")
    assert policy[0].endswith(": ASGAverageCPUUtilization, target 50.0")
    high = next(line for line in policy if "-AlarmHigh-" in line)
    assert ": OK since " in high
    assert "1 datapoint [3.0] was not greater than the threshold (50.0)" in high
    assert finding(diagnosis, "History of TargetTracking-scalelab-")[-1].endswith(
        "Alarm updated from INSUFFICIENT_DATA to OK"
    )
    assert finding(diagnosis, "The group's average CPU")[0].startswith("highest one-minute average: 3.0 % (")
    stress = finding(diagnosis, "Stress command ")
    assert "  scalelab stress: using stress-ng (every core at 100 % load)" in stress


@pytest.mark.scenario("probe-fails")
def test_a_probe_with_too_few_2xx_answers_fails_naming_the_codes_and_the_instances(
    rehearsal: Rehearsal,
) -> None:
    outcome = rehearsal.run(name="wf-probe-fails")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith(
        "failed at probe: too few 2xx answers: 10/20 answers were 2xx (50% < 90%)"
    )
    assert "; the others: 10 x 502" in outcome.cause
    assert "; diagnosis: answers 200: 10, 502: 10; answered by 1 instance(s): i-" in outcome.cause
    answers = diagnosis_of(outcome)["Probe answers (status codes, errors, instances)"]
    assert answers[:3] == ["20 requests", "200: 10", "502: 10"]
    assert answers[3].startswith("answered by 1 instance(s): i-")
    # The probe failed: no stress was sent, so no scale-out was looked for.
    assert [phase["name"] for phase in outcome.verdict["timeline"]] == ["provision", "wait_healthy"]
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("stress-never-runs")
def test_a_stress_command_that_fails_on_the_instances_is_named_as_why_nothing_scaled(
    rehearsal: Rehearsal,
) -> None:
    outcome = rehearsal.run(name="wf-stress-never-runs")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith(
        "failed at scale_out: no scale-out within 8 s: group stayed at 2/4 instances"
    )
    assert (
        "; last scale-out alarm state: OK; diagnosis: the group's average CPU reached at most 3.0 % "
        "(target 50 % average CPU); the stress is not known to have run on 2/2 instances (i-"
    ) in outcome.cause
    assert outcome.cause.count(" Failed") == 2
    stress = finding(diagnosis_of(outcome), "Stress command ")
    assert [line for line in stress if not line.startswith("  ")] == [
        line for line in stress if line.endswith(": Failed (exit code 126)")
    ]
    assert len([line for line in stress if line.endswith(": Failed (exit code 126)")]) == 2
    assert sum("_script.sh: Permission denied" in line for line in stress) == 2
    assert stress.count("  failed to run commands: exit status 126") == 2
    assert LAUNCH_OK not in rehearsal.logged_event_types(outcome.run_id)
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("launch-fails")
def test_failed_launches_fail_the_run_at_the_deadline_with_aws_status_message(rehearsal: Rehearsal) -> None:
    # Auto Scaling retries a failed launch (in another zone, say): one failure does not end the wait.
    outcome = rehearsal.run(name="wf-launch-fails")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith(
        "failed at scale_out: scale-out failed: 1 launch failed within 8 s and none succeeded; "
        "AWS said: 'We currently do not have sufficient t3.micro capacity"
    )
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in outcome.history if "stateEnteredEventDetails" in e
    ]
    assert entered.index("CheckScaleOut") == entered.index("AwaitScaleOut") + 1
    assert "; diagnosis: 1 unsuccessful launch activity, the newest at " in outcome.cause
    diagnosis = diagnosis_of(outcome)
    (failed,) = diagnosis["Unsuccessful launches (DescribeScalingActivities)"]
    shown = failed.split(" Failed: ", 1)[1].removesuffix("…")  # AWS's message, bounded to a line
    assert CAPACITY_ERROR.startswith(shown)
    assert finding(diagnosis, "Stress command ")
    assert LAUNCH_FAILED in rehearsal.logged_event_types(outcome.run_id)
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("zone-lacks-type")
def test_a_launch_refused_in_one_zone_is_retried_in_another_and_the_run_passes(rehearsal: Rehearsal) -> None:
    # Prepare kept every zone that offered t3.micro when it asked; the scale-out's launch in
    # us-east-1a fails anyway, and Auto Scaling (balanced-best-effort) launches in another zone.
    outcome = rehearsal.run(name="wf-zone-lacks-type")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.verdict is not None
    assert outcome.verdict["passed"] is True
    failed = [
        item["status_message"]["S"]
        for item in rehearsal.run_items(outcome.run_id)
        if item.get("detail_type", {}).get("S") == LAUNCH_FAILED
    ]
    assert failed == [UNSUPPORTED_ERROR]
    assert LAUNCH_OK in rehearsal.logged_event_types(outcome.run_id)
    # The verdict names the zone that refused, AWS's reason, and the zone that launched.
    launched = outcome.verdict["reason"].split("; ")[2]
    assert launched.startswith("i-")
    assert " launched in us-east-1" in launched
    assert f", after 1 unsuccessful launch in us-east-1a: {UNSUPPORTED_ERROR!r}" in outcome.verdict["reason"]
    assert " launched in us-east-1a " not in outcome.verdict["reason"]
    # Prepare left out the default VPC's us-east-1e subnet (us-east-1e offers no t3.micro),
    # and the report says so.
    assert outcome.report_path is not None
    lab = json.loads(outcome.report_path.read_text())["run"]["config"]["lab"]
    assert list(lab["dropped_subnets"].values()) == ["us-east-1e does not offer t3.micro"]
    assert not set(lab["dropped_subnets"]) & set(lab["subnet_ids"])
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("vcpu-limit")
def test_the_vcpu_quota_fails_every_launch_and_the_run_quotes_aws(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-vcpu-limit")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith("failed at scale_out: scale-out failed: ")
    assert "launches failed within 8 s and none succeeded; AWS said: 'You have requested more vCPU " in (
        outcome.cause
    )
    assert "than your current vCPU limit of 32 allows for the instance bucket" in outcome.cause
    assert LAUNCH_OK not in rehearsal.logged_event_types(outcome.run_id)
    assert rehearsal.logged_event_types(outcome.run_id).count(LAUNCH_FAILED) > 1
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("events-lost")
def test_a_scale_out_no_event_reported_is_found_in_the_scaling_activities(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-events-lost")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.verdict is not None
    assert outcome.verdict["passed"] is True
    assert (
        "(seen in the group's scaling activities: no Auto Scaling event reported it)"
        in outcome.verdict["reason"]
    )
    assert outcome.report_path is not None
    report = json.loads(outcome.report_path.read_text())
    assert report["run"]["scale_out"]["seen_in"] == "scaling_activities"
    assert "seen in the group's scaling activities" in report["verdict"]["reason"]
    assert rehearsal.logged_event_types(outcome.run_id) == []
    assert_nothing_left(rehearsal, outcome)


def _entered_states(outcome: Outcome) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in outcome.history if "stateEnteredEventDetails" in e]


@pytest.mark.scenario("scale-in")
def test_a_run_that_waits_for_the_scale_in_passes_once_the_group_is_back(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-scale-in")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.verdict is not None
    assert outcome.verdict["passed"] is True
    scale_in = outcome.verdict["checks"][-1]
    assert scale_in["name"] == "scale_in"
    assert " after the load stopped (desired capacity from " in scale_in["detail"]
    assert scale_in["detail"].endswith(" to 2)")
    assert [phase["name"] for phase in outcome.verdict["timeline"]][-1] == "load_stopped_to_scale_in"
    entered = _entered_states(outcome)
    assert entered.index("LoadStopped") == entered.index("StopStress") + 2
    assert "EC2 Instance Terminate Successful" in rehearsal.logged_event_types(outcome.run_id)
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("scale-in-never")
def test_a_group_that_never_scales_in_fails_the_run_saying_how_many_instances_stayed(
    rehearsal: Rehearsal,
) -> None:
    outcome = rehearsal.run(name="wf-scale-in-never")

    assert outcome.status == "FAILED"
    assert outcome.error == "LabFailed"
    assert outcome.cause is not None
    assert outcome.cause.startswith("failed at scale_in: no scale-in within 8 s: the group stayed at ")
    assert " instances (desired " in outcome.cause
    assert ", 2 before the scale-out) for " in outcome.cause
    assert "target tracking's scale-in alarm wants 15 one-minute datapoints below the target" in outcome.cause
    assert "WaitForScaleIn" in _entered_states(outcome)
    assert "EC2 Instance Terminate Successful" not in rehearsal.logged_event_types(outcome.run_id)
    assert_nothing_left(rehearsal, outcome)


def test_a_run_without_the_scale_in_expectation_does_not_wait_for_it(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-no-scale-in-wait")

    assert outcome.status == "SUCCEEDED", outcome.cause
    entered = _entered_states(outcome)
    assert entered[entered.index("ScaleIn?") + 1] == "Judge"
    assert "CheckScaleIn" not in entered


def assert_refused_in_prepare(rehearsal: Rehearsal, outcome: Outcome, error: str) -> str:
    """The run failed in Prepare with ``error``, recorded why, and created nothing; returns the cause."""
    assert outcome.status == "FAILED"
    assert outcome.error == error
    assert outcome.cause is not None
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in outcome.history if "stateEnteredEventDetails" in e
    ]
    assert entered == ["Prepare"]
    assert rehearsal.run_record(outcome.run_id)["status"]["S"] == "rejected"
    assert tagged_resources(outcome.run_id) == {}
    assert rehearsal.lock_holder() is None
    return outcome.cause


@pytest.mark.scenario("private-subnets")
def test_subnets_with_no_way_to_the_internet_are_refused_naming_them(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-private-subnets")

    cause = assert_refused_in_prepare(rehearsal, outcome, "SubnetsUnusable")
    for subnet in rehearsal.world.run_input["lab"]["subnet_ids"]:
        assert f"{subnet} (us-east-1" in cause
    assert "no public IPv4 address on launch and no route 0.0.0.0/0 to a NAT gateway" in cause
    assert "cannot reach the package repositories" in cause


@pytest.mark.scenario("two-subnets-in-a-zone")
def test_two_subnets_in_one_zone_are_refused_naming_both(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-two-subnets-in-a-zone")

    cause = assert_refused_in_prepare(rehearsal, outcome, "SubnetsUnusable")
    same_zone = sorted(rehearsal.world.run_input["lab"]["subnet_ids"][:2])
    assert f"{same_zone[0]} and {same_zone[1]} are both in us-east-1a" in cause
    assert "a load balancer takes one subnet per availability zone" in cause


@pytest.mark.scenario("type-offered-nowhere")
def test_an_instance_type_none_of_the_zones_offers_is_refused_naming_type_and_zones(
    rehearsal: Rehearsal,
) -> None:
    outcome = rehearsal.run(name="wf-type-offered-nowhere")

    cause = assert_refused_in_prepare(rehearsal, outcome, "InstanceTypeNotOffered")
    assert (
        "instance type m7i.large is offered in none of the availability zones of lab.subnet_ids "
        "(us-east-1a, us-east-1b)"
    ) in cause


@pytest.mark.scenario("replacement-under-stress")
def test_a_replacement_launched_under_stress_is_no_scale_out(rehearsal: Rehearsal) -> None:
    # Issue 15 #2: any "Launch Successful" during the wait passed the run.
    outcome = rehearsal.run(name="wf-replacement")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith("failed at scale_out: no scale-out within 8 s")
    # The reason names the launch that happened and why it was no scale-out (AWS's Cause).
    assert (
        "; diagnosis: 1 launch under the stress did not grow the group, no scale-out: 'At " in outcome.cause
    )
    assert "an instance was started in response to an unhealthy instance needing to be replaced." in (
        outcome.cause
    )
    assert LAUNCH_OK in rehearsal.logged_event_types(outcome.run_id)
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in outcome.history if "stateEnteredEventDetails" in e
    ]
    assert "CheckNewHealthy" not in entered
    diagnosis = diagnosis_of(outcome)
    activities = finding(diagnosis, "Scaling activities")
    assert any("in response to an unhealthy instance needing to be replaced" in line for line in activities)
    assert finding(diagnosis, "The group's average CPU")[0].startswith("highest one-minute average: 3.0 % (")
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("slow-scale-out")
def test_a_scale_out_after_the_deadline_fails_saying_the_launch_was_under_way(rehearsal: Rehearsal) -> None:
    # Issue 15 (noted): the reason read like no-scale-out's, although the alarm had fired.
    outcome = rehearsal.run(name="wf-slow-scale-out")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith(
        "failed at scale_out: scale-out too slow: the scaling policy asked for an"
    )
    assert "its launch was still under way (InProgress) when the 8 s were up" in outcome.cause
    diagnosis = diagnosis_of(outcome)
    # The alarm fired: its history says so, and the activity it started is still under way.
    assert any(
        line.endswith("Alarm updated from OK to ALARM")
        for line in finding(diagnosis, "History of TargetTracking-")
    )
    assert any(
        " InProgress Launching a new EC2 instance" in line
        for line in finding(diagnosis, "Scaling activities")
    )
    assert finding(diagnosis, "The group's average CPU")[0].startswith("highest one-minute average: ")
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("flaky-api")
def test_throttling_and_server_errors_are_absorbed_by_retries(rehearsal: Rehearsal) -> None:
    outcome = rehearsal.run(name="wf-flaky-api")

    assert rehearsal.world.faults_injected > 0
    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.verdict is not None
    assert outcome.verdict["passed"] is True
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("flaky-api")
def test_api_faults_hit_only_the_functions_calls(rehearsal: Rehearsal) -> None:
    # Issue 15 #13: a person's (or a test's) own calls to the emulator were throttled too.
    arn = rehearsal.start(merged_input(None), "wf-flaky-outsider")
    # No retries: a single throttled answer fails the test.
    ec2 = boto3.client(
        "ec2", endpoint_url=rehearsal.emulator.endpoint, config=Config(retries={"total_max_attempts": 1})
    )
    try:
        for _ in range(60):
            ec2.describe_security_groups()
    finally:
        outcome = rehearsal.finish(arn)

    assert rehearsal.world.faults_injected > 0
    assert outcome.status == "SUCCEEDED", outcome.cause


def test_bad_input_fails_in_prepare_naming_the_fields_and_creates_nothing(rehearsal: Rehearsal) -> None:
    bad = merged_input({"lab": {"max_size": "four", "min_size": 3, "desired_capacity": 2, "colour": "red"}})

    outcome = rehearsal.run(bad, name="wf-bad-input")

    assert outcome.status == "FAILED"
    assert outcome.error == "InvalidInput"
    assert outcome.cause is not None
    for field in ("lab.max_size", "lab.colour"):
        assert field in outcome.cause
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in outcome.history if "stateEnteredEventDetails" in e
    ]
    assert entered == ["Prepare"]
    assert tagged_resources("wf-bad-input") == {}
    assert rehearsal.run_record("wf-bad-input")["status"]["S"] == "rejected"
    assert rehearsal.lock_holder() is None


def test_two_runs_of_one_lab_one_runs_the_other_fails_fast_on_the_lock(rehearsal: Rehearsal) -> None:
    arns = {}

    def start(name: str) -> None:
        arns[name] = rehearsal.start(merged_input(None), name)

    starters = [threading.Thread(target=start, args=(name,)) for name in ("wf-first", "wf-second")]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    outcomes = {name: rehearsal.finish(arn) for name, arn in arns.items()}

    busy = [o for o in outcomes.values() if o.error == "LabBusy"]
    ran = [o for o in outcomes.values() if o.error != "LabBusy"]
    assert len(busy) == 1
    assert len(ran) == 1
    assert ran[0].status == "SUCCEEDED", ran[0].cause
    assert busy[0].cause is not None
    assert f"is in use by run '{ran[0].run_id}'" in busy[0].cause
    for outcome in outcomes.values():
        assert tagged_resources(outcome.run_id) == {}
    assert rehearsal.lock_holder() is None


def test_execution_names_differing_only_in_case_are_two_runs_that_never_touch_each_other(
    rehearsal: Rehearsal,
) -> None:
    # Issue 15 #1: "victim-X" shared "Victim-X"'s run id, so its rejection's cleanup deleted
    # the running lab, and a valid second run adopted it.
    victim = rehearsal.start(merged_input(None), "Victim-X")
    # The others start once Victim-X holds the lab, so which run gets the lock is not a race.
    holds_the_lab = time.monotonic() + LOCK_DEADLINE_SECONDS
    while rehearsal.lock_holder() != run_id_from_execution("Victim-X"):
        assert time.monotonic() < holds_the_lab, "Victim-X never took the lab's lock"
        time.sleep(0.05)
    rejected = rehearsal.start({"foo": 1}, "victim-X")
    same_lab = rehearsal.start(merged_input(None), "VICTIM-X")

    rejected_outcome = rehearsal.finish(rejected)
    same_lab_outcome = rehearsal.finish(same_lab)
    victim_outcome = rehearsal.finish(victim)

    assert len({victim_outcome.run_id, rejected_outcome.run_id, same_lab_outcome.run_id}) == 3
    assert victim_outcome.status == "SUCCEEDED", victim_outcome.cause
    assert rejected_outcome.error == "InvalidInput"
    assert same_lab_outcome.error == "LabBusy"
    assert same_lab_outcome.cause is not None
    assert f"is in use by run '{victim_outcome.run_id}'" in same_lab_outcome.cause
    for outcome in (victim_outcome, rejected_outcome, same_lab_outcome):
        assert tagged_resources(outcome.run_id) == {}
    assert rehearsal.lock_holder() is None


def test_runs_of_different_labs_at_once_each_pass(rehearsal: Rehearsal) -> None:
    # Every run's group gets a scaling policy of the same name: each must keep its own.
    labs = ("wf-lab-a", "wf-lab-b", "wf-lab-c")
    arns = {lab: rehearsal.start(merged_input({"lab": {"name": lab}}), lab) for lab in labs}

    outcomes = {lab: rehearsal.finish(arn) for lab, arn in arns.items()}

    for lab, outcome in outcomes.items():
        assert outcome.status == "SUCCEEDED", (lab, outcome.cause)
        assert tagged_resources(outcome.run_id) == {}
        assert rehearsal.lock_holder(lab) is None


# ---- the network and request signals: the load generator's HTTP instead of the SSM burn ----------


def load_executions(rehearsal: Rehearsal) -> list[dict[str, Any]]:
    assert rehearsal.emulator.stack is not None
    found: list[dict[str, Any]] = rehearsal.emulator.client("stepfunctions").list_executions(
        stateMachineArn=rehearsal.emulator.stack.outputs["LoadStateMachineArn"]
    )["executions"]
    return found


# A stopped load ends once its workers' round does (the emulator answers RUNNING until then, as
# docs/rehearsal.md says; on AWS a worker in flight likewise sends until its round ends): the
# rehearsal's round is a second.
LOAD_STOPS_WITHIN_SECONDS = 10.0


def assert_the_load_ran_and_stopped(rehearsal: Rehearsal, outcome: Outcome, metric: str) -> None:
    deadline = time.monotonic() + LOAD_STOPS_WITHIN_SECONDS
    (load,) = load_executions(rehearsal)
    while load["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
        (load,) = load_executions(rehearsal)
    assert load["name"] == f"scalelab-{outcome.run_id}-load"
    assert load["status"] == "ABORTED"  # StopStress stopped it
    measured = [item for item in rehearsal.run_items(outcome.run_id) if item["sk"]["S"].startswith("LOAD#")]
    assert measured, "no worker recorded a measurement"
    assert all(item["metric"]["S"] == metric for item in measured)
    assert sum(int(item["requests_ok"]["N"]) for item in measured) > 0


@pytest.mark.parametrize(
    ("metric", "moved"),
    [
        pytest.param("request_count", "requests_ok", marks=pytest.mark.scenario("request-count")),
        pytest.param("network_out", "bytes_received", marks=pytest.mark.scenario("network-out")),
        pytest.param("network_in", "bytes_sent", marks=pytest.mark.scenario("network-in")),
    ],
)
def test_each_http_signal_scales_the_group_out_under_its_load(
    rehearsal: Rehearsal, metric: str, moved: str
) -> None:
    outcome = rehearsal.run(name=f"wf-{metric.replace('_', '-')}")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.verdict is not None
    assert outcome.verdict["passed"] is True
    assert LAUNCH_OK in rehearsal.logged_event_types(outcome.run_id)
    assert outcome.report_path is not None
    report = json.loads(outcome.report_path.read_text())
    assert report["run"]["config"]["lab"]["scaling"]["metric"] == metric
    # No SSM burn: the CPU stayed idle, so only the signal's own metric can have scaled the group.
    assert report["run"]["stress"]["command_id"] == ""
    assert report["run"]["stress"]["load"]["metric"] == metric
    assert_the_load_ran_and_stopped(rehearsal, outcome, metric)
    measured = [item for item in rehearsal.run_items(outcome.run_id) if item["sk"]["S"].startswith("LOAD#")]
    assert sum(int(item[moved]["N"]) for item in measured) > 0
    assert_nothing_left(rehearsal, outcome)


@pytest.mark.scenario("target-too-high")
def test_a_target_the_capped_load_cannot_reach_fails_naming_the_peak_and_the_cap(
    rehearsal: Rehearsal,
) -> None:
    outcome = rehearsal.run(name="wf-target-too-high")

    assert outcome.status == "FAILED"
    assert outcome.cause is not None
    assert outcome.cause.startswith("failed at scale_out: no scale-out within 8 s: group stayed at 2/4")
    assert "diagnosis: the target group's requests per target reached at most " in outcome.cause
    assert "(target 5,000 requests per target per minute)" in outcome.cause
    assert "raise LoadRequestsPerSecondCap (now 100)" in outcome.cause
    diagnosis = diagnosis_of(outcome)
    peak = finding(diagnosis, "The target group's requests per target")[0]
    assert peak.startswith("highest one-minute value: ")
    load = finding(diagnosis, "The load (StartStress's plan)")
    assert load[1] == "planned 3000 per instance per minute for 2 instance(s), target 5000"
    assert_the_load_ran_and_stopped(rehearsal, outcome, "request_count")
    assert_nothing_left(rehearsal, outcome)
