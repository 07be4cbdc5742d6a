"""The diagnosis of a failed run: what AWS says about the part that failed, read by Judge.

One function per way a run fails (``KINDS``, keyed by the check that failed),
each returning a ``Diagnosis``: findings (a title and lines) for the report,
the notification and ``--json``, and a one-line summary for the verdict's
reason. Every read is bounded in time (short client timeouts, and a budget
for the whole diagnosis) and in size (lines and characters), and a read that
fails becomes a line saying so: a diagnosis never fails the verdict, so
teardown and the notification always follow.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scalelab.contracts.diagnosis import MAX_FINDINGS, MAX_LINE_CHARS, MAX_LINES, Diagnosis, Finding
from scalelab.contracts.judge import JudgeEvent, StressSummary
from scalelab.contracts.load import LoadPlan
from scalelab.contracts.scaleout import CONTROL_CHARACTERS, grew_beyond
from scalelab.contracts.scaling import Scaling
from scalelab.core.aws import quick_client
from scalelab.core.observability import logger
from scalelab.steps.scaling_metric import MetricSource, metric_source

# The whole diagnosis reads for at most this long (Judge's timeout is 60 s); each call fails fast
# (core.aws.quick_client).
BUDGET_SECONDS = 20.0
CONSOLE_LINES = 20  # the tail of the bootstrap log a person needs to see why the app did not start
COMMAND_OUTPUT_LINES = 5
MAX_INSTANCES = 10  # per finding: a lab has a handful; a bigger group shows its first ten
MAX_ACTIVITIES = 10
MAX_HISTORY = 10
SUMMARY_CHARS = 400
# How far before the stress the policy's metric is read: the datapoint the alarm compared first.
METRIC_LOOKBACK = timedelta(minutes=5)
METRIC_PERIOD_SECONDS = 60
TARGET_TRACKING = "TargetTrackingScaling"
FAILED_ACTIVITIES = frozenset({"Failed", "Cancelled"})
# A console line that says what went wrong, for the summary (else the last line is shown).
ERROR_WORDS = re.compile(r"error|fail|denied|not found|cannot|timed? ?out", re.IGNORECASE)
# Invocation statuses of a stress that ran or runs. Cancelled counts: StopStress cancels the burn
# when the scale-out wait ends, before Judge reads; one that never ran is Failed, TimedOut,
# Undeliverable or Terminated, with its output saying why.
NO_TARGETS = "no target was registered"
RAN_OR_RUNNING = frozenset({"Pending", "InProgress", "Delayed", "Success", "Cancelling", "Cancelled"})


def text(value: object, limit: int = MAX_LINE_CHARS) -> str:
    """What AWS said, kept as data: control characters replaced, at most ``limit`` characters."""
    printable = CONTROL_CHARACTERS.sub("?", str(value))
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def _when(moment: datetime | str | None) -> str:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).strftime("%H:%M:%S")
    return str(moment or "?")


class Budget:
    """The time left for reading; a read that would start after it is spent is not made."""

    def __init__(self, seconds: float = BUDGET_SECONDS) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline


def gather(title: str, read: Callable[[], list[str]], budget: Budget) -> Finding:
    """One finding: the lines ``read`` returns, or a line saying why they could not be read."""
    if budget.spent():
        lines = [f"not read: the diagnosis's {budget.seconds:.0f} s were spent on the reads before"]
    else:
        try:
            lines = read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            lines = [f"could not read this: {error.get('Code', 'error')}: {error.get('Message', '')}"]
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:
            lines = [f"could not read this: {type(exc).__name__}: {exc}"]
    bounded = [text(line) for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        bounded[-1] = f"… and {len(lines) - MAX_LINES + 1} more lines"
    return Finding(title=text(title), lines=bounded or ["(nothing)"])


def _diagnosis(summary: list[str], findings: list[Finding]) -> Diagnosis:
    return Diagnosis(
        summary=text("; ".join(s for s in summary if s), SUMMARY_CHARS), findings=findings[:MAX_FINDINGS]
    )


# ---- the reads ---------------------------------------------------------------------------------


def target_health(target_group_arn: str) -> list[dict[str, Any]]:
    answer = quick_client("elbv2").describe_target_health(TargetGroupArn=target_group_arn)
    descriptions: list[dict[str, Any]] = answer["TargetHealthDescriptions"]
    return descriptions


def _health_lines(descriptions: list[dict[str, Any]]) -> list[str]:
    if not descriptions:
        return ["no targets are registered: the group put no instance in service"]
    lines = []
    for item in descriptions[:MAX_INSTANCES]:
        health = item["TargetHealth"]
        reason = f": {health['Reason']}" if health.get("Reason") else ""
        description = f" ({health['Description']})" if health.get("Description") else ""
        lines.append(f"{item['Target']['Id']}: {health['State']}{reason}{description}")
    return lines


def console_tail(instance_id: str) -> list[str]:
    """The last lines of the instance's console output (its bootstrap log). AWS sends it
    base64-encoded; botocore decodes it (its ``decode_console_output`` handler)."""
    decoded = quick_client("ec2").get_console_output(InstanceId=instance_id).get("Output")
    if not decoded:
        return ["the console output is empty (an instance that just launched may not have posted any yet)"]
    lines = [line.rstrip() for line in decoded.splitlines() if line.strip()]
    return lines[-CONSOLE_LINES:]


def _target_tracking_policy(group: str) -> dict[str, Any] | None:
    policies = quick_client("autoscaling").describe_policies(
        AutoScalingGroupName=group, PolicyTypes=[TARGET_TRACKING]
    )["ScalingPolicies"]
    return policies[0] if policies else None


def _alarms(alarm_names: list[str]) -> list[dict[str, Any]]:
    if not alarm_names:
        return []
    alarms: list[dict[str, Any]] = quick_client("cloudwatch").describe_alarms(AlarmNames=alarm_names)[
        "MetricAlarms"
    ]
    return alarms


def _alarm_line(alarm: dict[str, Any]) -> str:
    since = _when(alarm.get("StateUpdatedTimestamp"))
    return f"{alarm['AlarmName']}: {alarm['StateValue']} since {since} ({alarm.get('StateReason', '')})"


def _alarm_history(alarm_name: str) -> list[str]:
    items = quick_client("cloudwatch").describe_alarm_history(
        AlarmName=alarm_name,
        HistoryItemType="StateUpdate",
        ScanBy="TimestampDescending",
        MaxRecords=MAX_HISTORY,
    )["AlarmHistoryItems"]
    return [f"{_when(item['Timestamp'])} {item['HistorySummary']}" for item in items] or [
        "no state change yet: the alarm never left its first state"
    ]


def _activity_lines(
    group: str,
    since: datetime | None = None,
    failed_only: bool = False,
    read: list[dict[str, Any]] | None = None,
) -> list[str]:
    """The group's activities as lines; the activities themselves go to ``read`` when given."""
    activities = quick_client("autoscaling").describe_scaling_activities(
        AutoScalingGroupName=group, MaxRecords=MAX_ACTIVITIES
    )["Activities"]
    if read is not None:
        read.extend(activities)
    lines = []
    for activity in activities:
        started = activity.get("StartTime")
        if since is not None and isinstance(started, datetime) and started < since:
            continue
        if failed_only and activity.get("StatusCode") not in FAILED_ACTIVITIES:
            continue
        code = activity.get("StatusCode", "?")
        if failed_only:  # AWS's reason is the status message; the description repeats it
            lines.append(
                f"{_when(started)} {code}: {activity.get('StatusMessage') or activity.get('Description')}"
            )
            continue
        message = f": {activity['StatusMessage']}" if activity.get("StatusMessage") else ""
        lines.append(f"{_when(started)} {code} {activity.get('Description', '')}{message}")
        if activity.get("Cause"):
            lines.append(f"  cause: {activity['Cause']}")
    return lines or ["no scaling activity" + (" failed" if failed_only else "") + " in this window"]


def _metric(source: MetricSource, since: datetime, now: datetime) -> tuple[float | None, list[str]]:
    """The highest one-minute value of the metric the policy tracks, and a line per minute."""
    statistics = [source.statistic] + ([source.spread] if source.spread else [])
    points = quick_client("cloudwatch").get_metric_statistics(
        Namespace=source.namespace,
        MetricName=source.name,
        Dimensions=source.cloudwatch_dimensions,
        StartTime=since - METRIC_LOOKBACK,
        EndTime=now + timedelta(seconds=METRIC_PERIOD_SECONDS),  # the end is exclusive: keep this minute
        Period=METRIC_PERIOD_SECONDS,
        Statistics=statistics,
        Unit=source.unit,
    )["Datapoints"]
    points.sort(key=lambda point: point["Timestamp"])
    if not points:
        where = ", ".join(f"{name} {value}" for name, value in source.dimensions)
        return None, [f"no {source.name} datapoint for {where} (is detailed monitoring on?)"]
    highest = max(point[source.statistic] for point in points)
    count = f"{len(points)} datapoint" + ("" if len(points) == 1 else "s")
    statistic = source.statistic.lower() if source.statistic != "Sum" else "value"
    lines = [f"highest one-minute {statistic}: {source.amount(highest)} ({count})"]
    for point in points[-(MAX_LINES - 1) :]:
        line = f"{_when(point['Timestamp'])} {statistic} {source.amount(point[source.statistic])}"
        if source.spread:
            line += f", {source.spread.lower()} {source.amount(point[source.spread])}"
        lines.append(line)
    return highest, lines


def _invocation_lines(command_id: str, instance_ids: list[str]) -> tuple[list[str], list[str]]:
    """A line (and the output's last lines) per instance, and the instances where it did not run
    (or whose invocation could not be read)."""
    ssm = quick_client("ssm")
    lines, not_running = [], []
    for instance_id in instance_ids[:MAX_INSTANCES]:
        try:
            invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            lines.append(f"{instance_id}: could not read: {code}")
            not_running.append(f"{instance_id} unknown ({code})")
            continue
        status = invocation.get("StatusDetails") or invocation.get("Status", "?")
        code = invocation.get("ResponseCode", -1)
        lines.append(f"{instance_id}: {status}" + (f" (exit code {code})" if code not in (-1, None) else ""))
        if invocation.get("Status") not in RAN_OR_RUNNING:
            not_running.append(f"{instance_id} {status}")
        for stream in ("StandardOutputContent", "StandardErrorContent"):
            output = [line for line in str(invocation.get(stream) or "").splitlines() if line.strip()]
            lines += [f"  {line}" for line in output[-COMMAND_OUTPUT_LINES:]]
    return lines, not_running


# ---- the kinds of failure ----------------------------------------------------------------------


def never_healthy(
    target_group_arn: str, instance_id: str | None = None, budget: Budget | None = None
) -> Diagnosis:
    """Why targets are not healthy: each target's reason, and the console of one that is unhealthy."""
    budget = budget or Budget()
    found: dict[str, list[dict[str, Any]]] = {}

    def health() -> list[str]:
        found["targets"] = target_health(target_group_arn)
        if instance_id is not None:
            found["targets"] = [t for t in found["targets"] if t["Target"]["Id"] == instance_id] or [
                {"Target": {"Id": instance_id}, "TargetHealth": {"State": "not registered"}}
            ]
        return _health_lines(found["targets"])

    findings = [gather("Target health (DescribeTargetHealth)", health, budget)]
    unhealthy = [t for t in found.get("targets", []) if t["TargetHealth"]["State"] != "healthy"]
    summary = []
    if unhealthy:
        first = unhealthy[0]
        reason = first["TargetHealth"].get("Reason") or first["TargetHealth"]["State"]
        summary.append(f"{first['Target']['Id']} is {first['TargetHealth']['State']} ({reason})")
        console = gather(
            f"Console output of {first['Target']['Id']} (last lines)",
            lambda: console_tail(first["Target"]["Id"]),
            budget,
        )
        findings.append(console)
        telling = [line for line in console.lines if ERROR_WORDS.search(line)] or console.lines[-1:]
        summary.append(f"its console says: {telling[0]!r}")
    elif found.get("targets") == []:
        summary.append(NO_TARGETS)
    return _diagnosis(summary, findings)


def no_scale_out(
    group: str,
    stress_started_at: str,
    command_id: str,
    instance_ids: list[str],
    budget: Budget | None = None,
    *,
    scaling: Scaling | None = None,
    target_group_arn: str = "",
    load: LoadPlan | None = None,
) -> Diagnosis:
    """Why the group did not grow: its alarm and that alarm's history, its activities, the metric its
    policy tracks (``scaling``: the run's; CPU at the policy's target when not given), the stress."""
    budget = budget or Budget()
    since = datetime.fromisoformat(stress_started_at).astimezone(UTC)
    policy: dict[str, Any] = {}

    def alarms() -> list[str]:
        policy.update(_target_tracking_policy(group) or {})
        if not policy:
            return ["the group has no target-tracking scaling policy"]
        configuration = policy.get("TargetTrackingConfiguration", {})
        metric = configuration.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType", "?")
        found = _alarms([alarm["AlarmName"] for alarm in policy.get("Alarms", [])])
        lines = [_alarm_line(alarm) for alarm in found] or ["the policy's alarms were not found"]
        return [f"policy {policy['PolicyName']}: {metric}, target {configuration.get('TargetValue')}", *lines]

    findings = [gather("Scaling policy and its alarms (DescribePolicies, DescribeAlarms)", alarms, budget)]
    high = next((a["AlarmName"] for a in policy.get("Alarms", []) if "AlarmHigh" in a["AlarmName"]), None)
    if high is not None:
        findings.append(
            gather(f"History of {high} (DescribeAlarmHistory)", lambda: _alarm_history(high), budget)
        )
    activities: list[dict[str, Any]] = []
    findings.append(
        gather(
            "Scaling activities (DescribeScalingActivities)",
            lambda: _activity_lines(group, read=activities),
            budget,
        )
    )
    if scaling is None:
        target = policy.get("TargetTrackingConfiguration", {}).get("TargetValue")
        scaling = Scaling(metric="cpu", target=float(target)) if target is not None else None
    source = metric_source(scaling or Scaling(metric="cpu", target=50), group, target_group_arn)
    peak: dict[str, float | None] = {}

    def metric_lines() -> list[str]:
        peak["highest"], lines = _metric(source, since, datetime.now(UTC))
        return lines

    findings.append(gather(f"{source.title} (CloudWatch {source.name})", metric_lines, budget))
    stress, stress_summary = (
        _load_finding(load) if load is not None else _stress_finding(command_id, instance_ids, budget)
    )
    findings.append(stress)
    summary = [_launches_not_scaling_out(activities, since)]
    highest = peak.get("highest")
    if highest is not None:
        summary.append(
            f"{source.title[0].lower()}{source.title[1:]} reached at most {source.amount(highest)}"
            + (f" (target {scaling.describe()})" if scaling is not None else "")
        )
    summary.append(stress_summary)
    return _diagnosis(summary, findings)


def _launches_not_scaling_out(activities: list[dict[str, Any]], since: datetime) -> str:
    """The launches since the stress whose Cause does not say the capacity grew (a replacement of
    an unhealthy instance, say): the group launched, but that was no scale-out."""
    others = [
        activity
        for activity in activities
        if activity.get("Description", "").startswith("Launching a new EC2 instance")
        and activity.get("StatusCode") == "Successful"
        and isinstance(activity.get("StartTime"), datetime)
        and activity["StartTime"] >= since
        and not grew_beyond(activity.get("Cause", ""), 0)
    ]
    if not others:
        return ""
    count = f"{len(others)} launch{'' if len(others) == 1 else 'es'}"
    return (
        f"{count} under the stress did not grow the group, no scale-out: {text(others[0].get('Cause', ''))!r}"
    )


def launch_failed(
    group: str, stress_started_at: str | None = None, budget: Budget | None = None
) -> Diagnosis:
    """Why Auto Scaling could not launch: the unsuccessful activities' status messages."""
    budget = budget or Budget()
    since = datetime.fromisoformat(stress_started_at).astimezone(UTC) if stress_started_at else None
    finding = gather(
        "Unsuccessful launches (DescribeScalingActivities)",
        lambda: _activity_lines(group, since, failed_only=True),
        budget,
    )
    failures = [
        line for line in finding.lines if not line.startswith(("no scaling", "could not", "not read"))
    ]
    summary = (
        f"{len(failures)} unsuccessful launch activit{'y' if len(failures) == 1 else 'ies'}, the newest at "
        f"{failures[0].split(' ', 1)[0]}"
        if failures
        else ""
    )
    return _diagnosis([summary], [finding])


def _stress_finding(command_id: str, instance_ids: list[str], budget: Budget) -> tuple[Finding, str]:
    """The command's status and output per instance, and the summary of whether it ran."""
    not_running: list[str] = []
    read: list[bool] = []

    def lines() -> list[str]:
        found, stopped = _invocation_lines(command_id, instance_ids)
        not_running.extend(stopped)
        read.append(True)
        return found

    finding = gather(f"Stress command {command_id} per instance (GetCommandInvocation)", lines, budget)
    if not read:
        summary = "whether the stress ran could not be read"
    elif not_running:
        summary = (
            f"the stress is not known to have run on {len(not_running)}/{len(instance_ids)} instances "
            f"({', '.join(not_running)})"
        )
    else:
        summary = f"the stress command ran on its {len(instance_ids)} instances"
    return finding, summary


def _load_finding(load: LoadPlan) -> tuple[Finding, str]:
    """The load as StartStress planned it; its note names the cap when the caps keep it under the target."""
    rate = f"{load.requests_per_second:g} requests/s"
    if load.transfer_bytes:
        rate += f" of {load.transfer_bytes} bytes ({load.bytes_per_second:g} bytes/s)"
    lines = [
        f"{load.method} {load.url}: {rate} from {load.workers} worker(s), rounds of {load.round_seconds} s",
        f"planned {load.planned_per_instance_per_minute:g} per instance per minute for "
        f"{load.desired_capacity} instance(s), target {load.target:g}",
        load.note,
    ]
    summary = f"the load {load.note}" if not load.capped_below_target else load.note
    return gather("The load (StartStress's plan)", lambda: lines, Budget()), summary


def _stress_or_load(stress: StressSummary, budget: Budget) -> tuple[Finding, str]:
    if stress.load is not None:
        return _load_finding(stress.load)
    return _stress_finding(stress.command_id, stress.instance_ids, budget)


def probe_failed(requests: int | None, status_counts: dict[str, int], instances: list[str]) -> Diagnosis:
    """What the probe saw: the answers by status code and error, and which instances answered."""
    answers = [f"{code}: {count}" for code, count in sorted(status_counts.items()) if count]
    spread = f"answered by {len(instances)} instance(s): {', '.join(instances[:MAX_INSTANCES]) or 'none'}"
    lines = [f"{requests if requests is not None else '?'} requests", *answers, spread]
    summary = f"answers {', '.join(answers) or 'none'}; {spread}"
    return _diagnosis(
        [summary], [gather("Probe answers (status codes, errors, instances)", lambda: lines, Budget())]
    )


# ---- from the run's state to the diagnosis -------------------------------------------------------


def _healthy(run: JudgeEvent) -> Diagnosis:
    if run.provision is None:
        return Diagnosis()
    budget = Budget()
    targets = never_healthy(run.provision.target_group_arn, budget=budget)
    if targets.summary != NO_TARGETS:
        return targets
    # No instance reached the target group: why the group could not launch one.
    launches = launch_failed(run.provision.auto_scaling_group_name, budget=budget)
    return _diagnosis([targets.summary, launches.summary], [*targets.findings, *launches.findings])


def _probe(run: JudgeEvent) -> Diagnosis:
    if run.probe is None or run.probe.requests is None:  # no probe result to show
        return Diagnosis()
    return probe_failed(run.probe.requests, run.probe.status_counts, run.probe.instances)


def _scale_out(run: JudgeEvent) -> Diagnosis:
    if run.provision is None or run.stress is None:
        return Diagnosis()
    group = run.provision.auto_scaling_group_name
    budget = Budget()
    if run.error is not None and run.error.error == "ScaleOutFailed":
        failed = launch_failed(group, run.stress.started_at, budget)
        stress, _ = _stress_or_load(run.stress, budget)
        return _diagnosis([failed.summary], [*failed.findings, stress])
    return no_scale_out(
        group,
        run.stress.started_at,
        run.stress.command_id,
        run.stress.instance_ids,
        budget,
        scaling=run.config.lab.scaling,
        target_group_arn=run.provision.target_group_arn,
        load=run.stress.load,
    )


def _new_instance_healthy(run: JudgeEvent) -> Diagnosis:
    if run.provision is None or run.scale_out is None:
        return Diagnosis()
    return never_healthy(run.provision.target_group_arn, run.scale_out.instance_id)


# The failure kinds, by the check that failed (contracts.judge.Check.name). A new way to fail
# adds its function here.
KINDS: dict[str, Callable[[JudgeEvent], Diagnosis]] = {
    "healthy": _healthy,
    "probe": _probe,
    "scale_out": _scale_out,
    "new_instance_healthy": _new_instance_healthy,
}


def diagnose(run: JudgeEvent, failed_check: str) -> Diagnosis:
    """The diagnosis of a run that failed ``failed_check``; empty for a check with nothing to read."""
    kind = KINDS.get(failed_check)
    if kind is None:
        return Diagnosis()
    try:
        return kind(run)
    except Exception as exc:  # a diagnosis explains a failure; it must never become one
        logger.exception("diagnosis failed", extra={"failed_check": failed_check})
        broke = [f"the diagnosis failed: {type(exc).__name__}: {exc}"]
        return Diagnosis(findings=[gather("Diagnosis", lambda: broke, Budget())])
