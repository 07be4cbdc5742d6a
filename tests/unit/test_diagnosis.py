"""The diagnosis of a failed run, read from the emulated account: each way to fail, its bounds, and a
read that fails becoming a line (never an error)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.autoscaling.models import autoscaling_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ssm.models import ssm_backends
from scalelab_rehearsal import moto_fixes

from scalelab.contracts.diagnosis import MAX_LINE_CHARS, MAX_LINES
from scalelab.contracts.judge import JudgeEvent
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.run import RunConfig
from scalelab.core.clock import utc_iso
from scalelab.core.settings import ReportSettings
from scalelab.steps import diagnosis
from scalelab.steps.provision import provision_lab
from scalelab.steps.verdict import judge_run
from scalelab.store.runs import RunTable

RUN = "diagnosis-0001"
REGION = "us-east-1"
BUCKET = "scalelab-test-reports"


def instances_of(lab: ProvisionResult) -> list[str]:
    group = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[lab.auto_scaling_group_name]
    )["AutoScalingGroups"][0]
    return sorted(member["InstanceId"] for member in group["Instances"])


def register(lab: ProvisionResult) -> list[str]:
    instances = instances_of(lab)
    boto3.client("elbv2").register_targets(
        TargetGroupArn=lab.target_group_arn, Targets=[{"Id": i, "Port": 3005} for i in instances]
    )
    return instances


def lines(found: diagnosis.Diagnosis) -> list[str]:
    return [line for finding in found.findings for line in finding.lines]


def test_never_healthy_gives_each_targets_reason_and_the_console_of_an_unhealthy_one(
    lab: ProvisionResult,
) -> None:
    first, second = register(lab)
    boto3.client("ec2").stop_instances(InstanceIds=[first])
    # What the instance printed while it booted (the rehearsal's world writes this; AWS keeps the console).
    ec2_backends[DEFAULT_ACCOUNT_ID][REGION].get_instance(first).__dict__["console_output"] = (
        "".join(f"boot line {n}\n" for n in range(40)) + "scalelab: bootstrap failed: npm ERR! ETIMEDOUT\n"
    )

    found = diagnosis.never_healthy(lab.target_group_arn)

    health, console = found.findings
    assert f"{first}: unused: Target.InvalidState (Target is in the stopped state)" in health.lines
    assert f"{second}: healthy" in health.lines
    assert console.title == f"Console output of {first} (last lines)"
    assert len(console.lines) == diagnosis.CONSOLE_LINES
    assert console.lines[-1] == "scalelab: bootstrap failed: npm ERR! ETIMEDOUT"
    assert found.summary == (
        f"{first} is unused (Target.InvalidState); "
        "its console says: 'scalelab: bootstrap failed: npm ERR! ETIMEDOUT'"
    )


def test_a_new_instance_that_never_registered_says_so(lab: ProvisionResult) -> None:
    register(lab)

    found = diagnosis.never_healthy(lab.target_group_arn, "i-0123456789abcdef0")

    assert found.findings[0].lines == ["i-0123456789abcdef0: not registered"]
    assert found.summary.startswith("i-0123456789abcdef0 is not registered")


def test_no_scale_out_reads_the_alarm_its_history_the_activities_the_cpu_and_the_stress(
    lab: ProvisionResult,
) -> None:
    instances = register(lab)
    stress_started = datetime.now(UTC) - timedelta(minutes=2)
    policy = boto3.client("autoscaling").describe_policies(AutoScalingGroupName=lab.auto_scaling_group_name)[
        "ScalingPolicies"
    ][0]
    high = next(a["AlarmName"] for a in policy["Alarms"] if "-AlarmHigh-" in a["AlarmName"])
    cloudwatch = boto3.client("cloudwatch")
    cloudwatch.set_alarm_state(
        AlarmName=high, StateValue="OK", StateReason="1 datapoint [12.0] was not greater"
    )
    cloudwatch.put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "AutoScalingGroupName", "Value": lab.auto_scaling_group_name}],
                "Value": value,
                "Unit": "Percent",
            }
            for value in (12.0, 8.0)
        ],
    )
    command = boto3.client("ssm").send_command(
        InstanceIds=instances, DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
    )["Command"]["CommandId"]
    # One instance's agent never ran it.
    invocation = next(
        i
        for i in ssm_backends[DEFAULT_ACCOUNT_ID][REGION].get_command_by_id(command).invocations
        if i["InstanceId"] == instances[0]
    )
    invocation["Status"] = invocation["StatusDetails"] = "Undeliverable"

    found = diagnosis.no_scale_out(
        lab.auto_scaling_group_name, utc_iso(stress_started.timestamp()), command, instances
    )

    titles = [finding.title for finding in found.findings]
    assert titles == [
        "Scaling policy and its alarms (DescribePolicies, DescribeAlarms)",
        f"History of {high} (DescribeAlarmHistory)",
        "Scaling activities (DescribeScalingActivities)",
        "The group's average CPU (CloudWatch CPUUtilization)",
        f"Stress command {command} per instance (GetCommandInvocation)",
    ]
    policy_lines, history, activities, cpu, stress = (finding.lines for finding in found.findings)
    assert any(line.startswith(f"{high}: OK since ") for line in policy_lines)
    assert any("-AlarmLow-" in line and ": INSUFFICIENT_DATA since " in line for line in policy_lines)
    assert history[0].endswith("Alarm updated from INSUFFICIENT_DATA to OK")
    assert any("Launching a new EC2 instance" in line for line in activities)
    assert cpu[0] == "highest one-minute average: 10.0 % (1 datapoint)"
    assert any(line.startswith(f"{instances[0]}: Undeliverable") for line in stress)
    assert found.summary == (
        "the group's average CPU reached at most 10.0 % (target 50 % average CPU); "
        f"the stress is not known to have run on 1/2 instances ({instances[0]} Undeliverable)"
    )


def test_no_scale_out_names_a_launch_under_the_stress_that_only_replaced_an_instance(
    lab: ProvisionResult,
) -> None:
    instances = register(lab)
    stress_started = datetime.now(UTC) - timedelta(minutes=2)
    command = boto3.client("ssm").send_command(
        InstanceIds=instances, DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
    )["Command"]["CommandId"]
    replaced = "At 2026-01-15T10:04:00Z an instance was started in response to an unhealthy instance."
    group = autoscaling_backends[DEFAULT_ACCOUNT_ID][REGION].autoscaling_groups[lab.auto_scaling_group_name]
    group.instance_states.pop(0)  # out of service; Auto Scaling launches one in its place
    with moto_fixes.capacity_cause(replaced):
        group.set_desired_capacity(group.desired_capacity)

    found = diagnosis.no_scale_out(
        lab.auto_scaling_group_name, utc_iso(stress_started.timestamp()), command, instances
    )

    assert found.summary.startswith(
        f"1 launch under the stress did not grow the group, no scale-out: {replaced!r}"
    )


def test_launch_failed_gives_the_unsuccessful_activities_status_messages(lab: ProvisionResult) -> None:
    group = autoscaling_backends[DEFAULT_ACCOUNT_ID][REGION].autoscaling_groups[lab.auto_scaling_group_name]
    stress_started = utc_iso()
    message = "You have requested more vCPU capacity than your current vCPU limit of 0 allows."
    moto_fixes.record_activity(
        group,
        Description="Launching a new EC2 instance.  Status Reason: …",
        Cause="x",
        StatusCode="Failed",
        StatusMessage=message,
    )

    found = diagnosis.launch_failed(lab.auto_scaling_group_name, stress_started)

    (failed,) = found.findings
    assert len(failed.lines) == 1
    assert failed.lines[0].endswith(f" Failed: {message}")
    assert found.summary.startswith("1 unsuccessful launch activity, the newest at ")


def test_probe_failed_shows_the_answers_and_the_instances(config: RunConfig) -> None:
    found = diagnosis.probe_failed(20, {"200": 12, "502": 8, "timeout": 0, "connection_error": 0}, ["i-a"])

    assert found.findings[0].lines == ["20 requests", "200: 12", "502: 8", "answered by 1 instance(s): i-a"]
    assert found.summary == "answers 200: 12, 502: 8; answered by 1 instance(s): i-a"


def test_a_read_that_fails_is_a_line_and_the_rest_is_still_read(account: None) -> None:
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/scalelab-gone/0123456789abcdef"

    found = diagnosis.never_healthy(arn)

    assert found.findings[0].lines[0].startswith("could not read this: TargetGroupNotFound")
    assert found.summary == ""


def test_reads_after_the_budget_is_spent_are_not_made(lab: ProvisionResult) -> None:
    spent = diagnosis.Budget(0)

    found = diagnosis.never_healthy(lab.target_group_arn, budget=spent)

    assert found.findings[0].lines == ["not read: the diagnosis's 0 s were spent on the reads before"]


def test_what_aws_says_is_bounded_and_kept_as_data(lab: ProvisionResult) -> None:
    (first, _) = register(lab)
    boto3.client("ec2").stop_instances(InstanceIds=[first])
    ec2_backends[DEFAULT_ACCOUNT_ID][REGION].get_instance(first).__dict__["console_output"] = (
        "x" * 5000 + "\x1b[31m\n"
    ) * 3

    console = diagnosis.never_healthy(lab.target_group_arn).findings[1]

    assert all(len(line) <= MAX_LINE_CHARS for line in console.lines)
    assert console.lines[0].endswith("…")
    assert not any("\x1b" in line for line in console.lines)
    many = diagnosis.gather("many", lambda: [str(n) for n in range(100)], diagnosis.Budget())
    assert len(many.lines) == MAX_LINES
    assert many.lines[-1] == f"… and {100 - MAX_LINES + 1} more lines"


@pytest.fixture
def settings(account: None) -> ReportSettings:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return ReportSettings(REPORTS_BUCKET=BUCKET)


def _state(config: RunConfig, lab: ProvisionResult, **parts: Any) -> JudgeEvent:
    return JudgeEvent.model_validate(
        {"config": config.model_dump(mode="json"), "provision": lab.model_dump(mode="json"), **parts}
    )


def test_judge_puts_the_diagnosis_in_the_reason_the_verdict_and_the_report(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    register(lab)
    error = {"Error": "TargetsNotHealthy", "Cause": json.dumps({"errorMessage": "2 unhealthy"})}

    verdict = judge_run(_state(config, lab, error=error), run_table, settings)

    assert verdict.passed is False
    assert verdict.reason.startswith("failed at healthy: targets not healthy within ")
    assert "; diagnosis: " not in verdict.reason  # every target is healthy in moto: nothing to summarise
    assert verdict.diagnosis[0].title == "Target health (DescribeTargetHealth)"
    report = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=verdict.report.key)["Body"].read())
    assert report["diagnosis"] == [finding.model_dump(mode="json") for finding in verdict.diagnosis]
    assert report["verdict"]["diagnosis"] == report["diagnosis"]


def test_judge_shows_a_failed_probes_answers(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    now = utc_iso()
    healthy = {
        "expectation": "2 healthy targets",
        "expectation_met": True,
        "counts": {"healthy": 2},
        "healthy_instances": ["i-0000000000000000a", "i-0000000000000000b"],
        "targets": {},
        "checked_at": now,
        "elapsed_seconds": 1,
        "deadline_at": now,
    }
    # The probe's whole result, as the state machine keeps it in $.probe.
    probe = {
        "passed": False,
        "reason": "only 1 instance answered",
        "requests": 10,
        "status_counts": {"200": 6, "502": 4, "timeout": 0, "connection_error": 0},
        "instances": ["i-0000000000000000a"],
        "latency_ms": {"p50": 3.0, "p95": 9.0},
        "probed_at": now,
    }

    verdict = judge_run(_state(config, lab, healthy=healthy, probe=probe), run_table, settings)

    assert verdict.reason == (
        "failed at probe: only 1 instance answered; diagnosis: answers 200: 6, 502: 4; "
        "answered by 1 instance(s): i-0000000000000000a"
    )
    assert verdict.diagnosis[0].lines == [
        "10 requests",
        "200: 6",
        "502: 4",
        "answered by 1 instance(s): i-0000000000000000a",
    ]


def test_targets_that_never_registered_come_with_the_groups_failed_launches(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    group = autoscaling_backends[DEFAULT_ACCOUNT_ID][REGION].autoscaling_groups[lab.auto_scaling_group_name]
    quota = "You have requested more vCPU capacity than your current vCPU limit of 0 allows."
    elbv2 = boto3.client("elbv2")
    registered = elbv2.describe_target_health(TargetGroupArn=lab.target_group_arn)["TargetHealthDescriptions"]
    elbv2.deregister_targets(
        TargetGroupArn=lab.target_group_arn, Targets=[{"Id": t["Target"]["Id"]} for t in registered]
    )
    moto_fixes.record_activity(
        group, Description="Launching a new EC2 instance", Cause="x", StatusCode="Failed", StatusMessage=quota
    )

    verdict = judge_run(_state(config, lab), run_table, settings)

    assert verdict.diagnosis[0].lines == ["no targets are registered: the group put no instance in service"]
    assert verdict.diagnosis[1].lines[0].endswith(f" Failed: {quota}")
    newest = verdict.diagnosis[1].lines[0].split(" ", 1)[0]
    assert verdict.reason.endswith(
        f"; diagnosis: no target was registered; 1 unsuccessful launch activity, the newest at {newest}"
    )


def test_a_failure_with_nothing_to_read_has_no_diagnosis(config: RunConfig, lab: ProvisionResult) -> None:
    # A lab that was not provisioned: the error in the reason is all there is.
    assert diagnosis.diagnose(_state(config, lab), "provisioned") == diagnosis.Diagnosis()


def test_a_diagnosis_that_breaks_is_a_finding_and_the_verdict_still_comes(
    config: RunConfig,
    lab: ProvisionResult,
    run_table: RunTable,
    settings: ReportSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_run: JudgeEvent) -> diagnosis.Diagnosis:
        raise RuntimeError("a bug in a new kind")

    monkeypatch.setitem(diagnosis.KINDS, "healthy", broken)

    verdict = judge_run(_state(config, lab), run_table, settings)

    assert verdict.passed is False
    assert verdict.reason.startswith("failed at healthy: ")
    assert [f.model_dump() for f in verdict.diagnosis] == [
        {"title": "Diagnosis", "lines": ["the diagnosis failed: RuntimeError: a bug in a new kind"]}
    ]


# The run's own metric in the diagnosis of a run that did not scale out: the metric, the dimensions
# it is published under, the values put (one minute), and what the diagnosis says of them.
SIGNALS: dict[str, tuple[float, str, str, list[float], str, str]] = {
    "network_in": (
        2_000_000,
        "AWS/EC2",
        "NetworkIn",
        [900_000.0, 1_100_000.0],  # two instances' bytes: the group's average is 1,000,000
        "Bytes",
        "The group's average network in reached at most 1,000,000 bytes in a minute "
        "(target 2,000,000 bytes received per instance per minute)",
    ),
    "network_out": (
        3_000_000,
        "AWS/EC2",
        "NetworkOut",
        [2_500_000.0],
        "Bytes",
        "The group's average network out reached at most 2,500,000 bytes in a minute "
        "(target 3,000,000 bytes sent per instance per minute)",
    ),
    "request_count": (
        600,
        "AWS/ApplicationELB",
        "RequestCountPerTarget",
        [240.0, 60.0],  # one minute's Sum: 300 requests per target
        "Count",
        "The target group's requests per target reached at most 300 requests in a minute "
        "(target 600 requests per target per minute)",
    ),
}


@pytest.mark.parametrize("metric", list(SIGNALS))
def test_no_scale_out_reports_the_peak_of_the_runs_own_metric_beside_its_target(
    metric: str, prepare: Any, provision_settings: Any, run_table: RunTable
) -> None:
    target, namespace, name, values, unit, summary = SIGNALS[metric]
    config = prepare(
        f"diagnosis-{metric.replace('_', '-')}", {"lab": {"scaling": {"metric": metric, "target": target}}}
    )
    lab = provision_lab(config, provision_settings, run_table)
    instances = register(lab)
    dimension = (
        {"Name": "TargetGroup", "Value": lab.target_group_arn.split(":", 5)[5]}
        if metric == "request_count"
        else {"Name": "AutoScalingGroupName", "Value": lab.auto_scaling_group_name}
    )
    boto3.client("cloudwatch").put_metric_data(
        Namespace=namespace,
        MetricData=[
            {"MetricName": name, "Dimensions": [dimension], "Value": v, "Unit": unit} for v in values
        ],
    )
    command = boto3.client("ssm").send_command(
        InstanceIds=instances, DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
    )["Command"]["CommandId"]
    stress = {
        "command_id": command,
        "started_at": utc_iso((datetime.now(UTC) - timedelta(minutes=2)).timestamp()),
        "instance_ids": instances,
    }

    found = diagnosis.diagnose(_state(config, lab, stress=stress), "scale_out")

    titles = [finding.title for finding in found.findings]
    title = summary.split(" reached", 1)[0]
    assert f"{title} (CloudWatch {name})" in titles
    (policy_lines,) = [f.lines for f in found.findings if f.title.startswith("Scaling policy")]
    assert policy_lines[0].endswith(f": {config.lab.scaling.spec.predefined_type}, target {float(target)}")
    assert (title[0].lower() + summary[1:]) in found.summary
