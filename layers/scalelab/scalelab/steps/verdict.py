"""Judge: the run's verdict from its expectations, with a reason a person can act on.

Judge reads whatever the workflow reached: a run that failed at any state
still gets a verdict that says where and why. The JSON report goes to S3, the
verdict to the run record, and the timings to CloudWatch through Powertools
Metrics. The HTML page is written after Teardown (``steps.report_html``), so it
can say when each resource went; until then the verdict carries a plain
notification, which Notify publishes if the page cannot be written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools.metrics import MetricUnit

from scalelab.contracts.judge import Check, JudgeEvent, Phase, ReportLocation, ScaleOutSummary, Verdict
from scalelab.contracts.provision import ProvisionResult
from scalelab.core.aws import client
from scalelab.core.clock import seconds_between, utc_iso, whole_seconds
from scalelab.core.observability import logger, metrics
from scalelab.core.settings import ReportSettings
from scalelab.steps.diagnosis import diagnose
from scalelab.store.runs import RunTable


@dataclass(frozen=True)
class GroupState:
    """The group as Judge finds it, to explain a missing scale-out."""

    in_service: int
    desired: int
    max_size: int
    alarm_state: str


GroupLookup = Callable[[str], "GroupState | None"]


def group_state(group_name: str) -> GroupState | None:
    autoscaling = client("autoscaling")
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]
    if not groups:
        return None
    alarm_names = [
        alarm["AlarmName"]
        for policy in autoscaling.describe_policies(AutoScalingGroupName=group_name)["ScalingPolicies"]
        for alarm in policy.get("Alarms", [])
        if "AlarmHigh" in alarm["AlarmName"]
    ]
    alarms = (
        client("cloudwatch").describe_alarms(AlarmNames=alarm_names)["MetricAlarms"] if alarm_names else []
    )
    return GroupState(
        in_service=sum(1 for member in groups[0]["Instances"] if member["LifecycleState"] == "InService"),
        desired=groups[0]["DesiredCapacity"],
        max_size=groups[0]["MaxSize"],
        alarm_state=alarms[0]["StateValue"] if alarms else "unknown (no scale-out alarm found)",
    )


def _with_error(run: JudgeEvent, detail: str) -> str:
    if run.error is None:
        return detail
    return (
        f"{detail} ({run.error.error}: {run.error.message})"
        if run.error.message
        else f"{detail} ({run.error.error})"
    )


# What CheckScaleOut found at the deadline, when it was more than "nothing happened".
SCALE_OUT_FINDINGS = {"ScaleOutFailed": "scale-out failed", "ScaleOutTooSlow": "scale-out too slow"}


def _scale_out_missing(run: JudgeEvent, describe_group: GroupLookup) -> str:
    within = run.config.expectations.scale_out_within_seconds
    if run.error is not None and run.error.error in SCALE_OUT_FINDINGS:
        return f"{SCALE_OUT_FINDINGS[run.error.error]}: {run.error.message or 'no reason given'}"
    state = describe_group(run.config.names.auto_scaling_group)
    if state is None:
        return _with_error(run, f"no scale-out within {within} s")
    return (
        f"no scale-out within {within} s: group stayed at {state.in_service}/{state.max_size} instances "
        f"(desired {state.desired}); last scale-out alarm state: {state.alarm_state}"
    )


def _healthy(run: JudgeEvent, provision: ProvisionResult, _: GroupLookup) -> Check:
    if run.healthy is None or not run.healthy.expectation_met:
        within = run.config.expectations.healthy_within_seconds
        return Check(
            name="healthy", passed=False, detail=_with_error(run, f"targets not healthy within {within} s")
        )
    took = seconds_between(provision.provisioned_at, run.healthy.checked_at)
    return Check(name="healthy", passed=True, detail=f"{run.healthy.expectation} {took} s after provisioning")


def _probe(run: JudgeEvent, _provision: ProvisionResult, _: GroupLookup) -> Check:
    if run.probe is None:
        return Check(name="probe", passed=False, detail=_with_error(run, "the app was not probed"))
    return Check(name="probe", passed=run.probe.passed, detail=run.probe.reason)


def _scale_out(run: JudgeEvent, _provision: ProvisionResult, describe_group: GroupLookup) -> Check:
    if run.stress is None:
        return Check(name="scale_out", passed=False, detail=_with_error(run, "the stress test did not start"))
    if run.scale_out is None:
        return Check(name="scale_out", passed=False, detail=_scale_out_missing(run, describe_group))
    within = run.config.expectations.scale_out_within_seconds
    took = seconds_between(run.stress.started_at, run.scale_out.launched_at)
    late = "" if took <= within else f", later than the {within} s expected"
    seen = (
        " (seen in the group's scaling activities: no Auto Scaling event reported it)"
        if run.scale_out.seen_in == "scaling_activities"
        else ""
    )
    where = f" in {run.scale_out.availability_zone}" if run.scale_out.availability_zone else ""
    detail = (
        f"{run.scale_out.instance_id} launched{where} {took} s after stress started"
        f"{_after_unsuccessful(run.scale_out)}{late}{seen}"
    )
    return Check(name="scale_out", passed=took <= within, detail=detail)


def _after_unsuccessful(scale_out: ScaleOutSummary) -> str:
    """ ", after 1 unsuccessful launch in us-east-1a: '<AWS's reason>'", or "" when none failed."""
    count = scale_out.unsuccessful_launches
    if count == 0:
        return ""
    zones = sorted(
        {launch.availability_zone for launch in scale_out.unsuccessful if launch.availability_zone}
    )
    where = f" in {', '.join(zones)}" if zones else ""
    reasons = list(dict.fromkeys(launch.status_message for launch in scale_out.unsuccessful))
    more = count - len(scale_out.unsuccessful)
    quoted = "; ".join(f"{reason!r}" for reason in reasons) + (f" (and {more} more)" if more > 0 else "")
    return f", after {count} unsuccessful launch{'' if count == 1 else 'es'}{where}: {quoted}"


def _new_instance_healthy(run: JudgeEvent, _provision: ProvisionResult, _: GroupLookup) -> Check:
    if run.scale_out is None:  # not reached: _scale_out failed first
        return Check(name="new_instance_healthy", passed=False, detail="no new instance")
    if run.new_healthy is None or not run.new_healthy.expectation_met:
        within = run.config.expectations.new_instance_healthy_within_seconds
        detail = f"new instance {run.scale_out.instance_id} not healthy within {within} s"
        return Check(name="new_instance_healthy", passed=False, detail=_with_error(run, detail))
    took = seconds_between(run.scale_out.launched_at, run.new_healthy.checked_at)
    return Check(
        name="new_instance_healthy",
        passed=True,
        detail=f"{run.new_healthy.expectation} {took} s after launch",
    )


def _scale_in(run: JudgeEvent, _provision: ProvisionResult, _: GroupLookup) -> Check:
    within = run.config.expectations.scale_in_within_seconds
    if run.scale_in_wait is None:
        return Check(name="scale_in", passed=False, detail=_with_error(run, "the scale-in was not awaited"))
    scale_in = run.scale_in
    if scale_in is None or not scale_in.expectation_met or scale_in.scaled_in_at is None:
        if run.error is not None and run.error.error == "NoScaleIn":
            return Check(name="scale_in", passed=False, detail=run.error.message)
        return Check(name="scale_in", passed=False, detail=_with_error(run, f"no scale-in within {within} s"))
    took = seconds_between(run.scale_in_wait.load_stopped_at, scale_in.scaled_in_at)
    late = "" if within is None or took <= within else f", later than the {within} s expected"
    change = f" (desired capacity {scale_in.capacity_change})" if scale_in.capacity_change else ""
    seen = (
        " (seen in the group's scaling activities: no Auto Scaling event reported it)"
        if scale_in.seen_in == "scaling_activities"
        else ""
    )
    detail = f"{scale_in.instance_id} terminated {took} s after the load stopped{change}{late}{seen}"
    return Check(name="scale_in", passed=within is None or took <= within, detail=detail)


# The expectations in the order the workflow meets them (the scale-in only when the run set it).
GATES = (_healthy, _probe, _scale_out, _new_instance_healthy)
OPTIONAL_GATES = (_scale_in,)


def evaluate(run: JudgeEvent, describe_group: GroupLookup = group_state) -> list[Check]:
    """Each expectation in order, as far as the run got; a failed check ends the list."""
    if run.provision is None:
        return [
            Check(name="provisioned", passed=False, detail=_with_error(run, "the lab was not provisioned"))
        ]
    checks: list[Check] = []
    gates = GATES + (OPTIONAL_GATES if run.config.expectations.scale_in_within_seconds is not None else ())
    for gate in gates:
        checks.append(gate(run, run.provision, describe_group))
        if not checks[-1].passed:
            break
    return checks


def timeline(run: JudgeEvent) -> list[Phase]:
    """The phases the run completed, each with its start, end and length."""
    healthy_at = run.healthy.checked_at if run.healthy and run.healthy.expectation_met else None
    new_healthy_at = (
        run.new_healthy.checked_at if run.new_healthy and run.new_healthy.expectation_met else None
    )
    provisioned_at = run.provision.provisioned_at if run.provision else None
    stress_at = run.stress.started_at if run.stress else None
    launched_at = run.scale_out.launched_at if run.scale_out else None
    load_stopped_at = run.scale_in_wait.load_stopped_at if run.scale_in_wait else None
    scaled_in_at = run.scale_in.scaled_in_at if run.scale_in and run.scale_in.expectation_met else None
    marks = [
        ("provision", run.config.started_at, provisioned_at),
        ("wait_healthy", provisioned_at, healthy_at),
        ("stress_to_scale_out", stress_at, launched_at),
        ("new_instance_healthy", launched_at, new_healthy_at),
        ("load_stopped_to_scale_in", load_stopped_at, scaled_in_at),
    ]
    phases = []
    for name, start, end in marks:
        if start is None or end is None:
            continue
        # One precision for every mark: a fraction of a second on one side only could end a
        # phase before it began.
        begun, ended = whole_seconds(start), whole_seconds(end)
        phases.append(
            Phase(name=name, started_at=begun, ended_at=ended, seconds=seconds_between(begun, ended))
        )
    return phases


def notification(
    verdict: Verdict, lab: str, link: str | None = None, expires_at: datetime | None = None
) -> str:
    """What Notify publishes: the verdict on the first line, then the reason, the diagnosis
    (bounded by steps.diagnosis), the page's link when there is one, and where the reports are."""
    status = "PASSED" if verdict.passed else "FAILED"
    page = verdict.page or verdict.report
    diagnosis = [line for finding in verdict.diagnosis for line in ["", f"{finding.title}:", *finding.lines]]
    linked = (
        [
            f"Report (a web page): {link}",
            f"The link works until {expires_at.isoformat(timespec='seconds')} at the latest, and stops "
            "sooner if the signer's temporary credentials expire first; afterwards "
            f"`scalelab report {verdict.run_id} --html FILE` fetches the page.",
        ]
        if link is not None and expires_at is not None
        else []
    )
    return "\n".join(
        [
            f"{status}: scalelab run {verdict.run_id} (lab {lab})",
            "",
            verdict.reason,
            *diagnosis,
            "",
            *linked,
            f"HTML report: s3://{page.bucket}/{page.key}",
            f"JSON report: s3://{verdict.report.bucket}/{verdict.report.key}",
        ]
    )


METRIC_OF_PHASE = {
    "wait_healthy": "TimeToHealthySeconds",
    "stress_to_scale_out": "StressToScaleOutSeconds",
    "new_instance_healthy": "NewInstanceToHealthySeconds",
    "load_stopped_to_scale_in": "LoadStoppedToScaleInSeconds",
}


def judge_run(
    run: JudgeEvent,
    table: RunTable,
    settings: ReportSettings,
    now: float | None = None,
    describe_group: GroupLookup = group_state,
) -> Verdict:
    now = time.time() if now is None else now
    config = run.config
    logger.append_keys(run_id=config.run_id)
    checks = evaluate(run, describe_group)
    passed = all(check.passed for check in checks)
    findings = []
    if passed:
        reason = "passed: " + "; ".join(check.detail for check in checks)
    else:
        failed = next(check for check in checks if not check.passed)
        reason = f"failed at {failed.name}: {failed.detail}"
        diagnosis = diagnose(run, failed.name)
        findings = diagnosis.findings
        if diagnosis.summary:
            reason += f"; diagnosis: {diagnosis.summary}"
    verdict = Verdict(
        run_id=config.run_id,
        passed=passed,
        reason=reason,
        checks=checks,
        timeline=timeline(run),
        report=ReportLocation(
            bucket=settings.reports_bucket, key=f"reports/{config.lab.name}/{config.run_id}.json"
        ),
        page=ReportLocation(
            bucket=settings.reports_bucket, key=f"reports/{config.lab.name}/{config.run_id}.html"
        ),
        judged_at=utc_iso(now),
        diagnosis=findings,
    )
    report = {
        "verdict": verdict.model_dump(mode="json", exclude={"notification"}),
        "run": run.model_dump(mode="json", by_alias=True),
        "diagnosis": [finding.model_dump(mode="json") for finding in findings],
    }
    client("s3").put_object(
        Bucket=verdict.report.bucket,
        Key=verdict.report.key,
        Body=json.dumps(report, indent=2, sort_keys=True).encode(),
        ContentType="application/json",
    )
    verdict = verdict.model_copy(update={"notification": notification(verdict, config.lab.name)})
    table.record_verdict(
        config.run_id, passed, reason, f"s3://{verdict.report.bucket}/{verdict.report.key}", now
    )
    metrics.add_dimension(name="lab", value=config.lab.name)
    for phase in verdict.timeline:
        if phase.name in METRIC_OF_PHASE:
            metrics.add_metric(name=METRIC_OF_PHASE[phase.name], unit=MetricUnit.Seconds, value=phase.seconds)
    metrics.add_metric(name="VerdictPassed", unit=MetricUnit.Count, value=1 if passed else 0)
    logger.info("verdict", extra={"passed": passed, "reason": reason})
    return verdict
