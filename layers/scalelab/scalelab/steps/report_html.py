"""The report a person opens: one self-contained HTML page, the run's timeline drawn as inline SVG.

PublishReport writes it next to Judge's JSON report once Teardown is over, so it lists when
each resource went, and hands Notify the notification with a link to it. Everything on it is
data, never markup: run ids,
reasons, AWS's status messages and diagnosis lines come from users and from AWS, so every
string is escaped. The page fetches nothing (no script, stylesheet or font from elsewhere) and
says so in a Content Security Policy, so it reads the same from S3, a mail link or a disk.

The picture is drawn by pygal, a pure-Python SVG charting library (about 2 MB installed with
its dependencies): matplotlib would need numpy, Pillow and fonttools in the Lambda layer, tens of
megabytes that every cold start of every function pays, for two line charts.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pygal
from botocore.exceptions import ClientError
from pygal.style import Style

from scalelab.contracts.judge import JudgeEvent, ReportLocation, Verdict
from scalelab.core.aws import client, error_code, is_transient, url_signer
from scalelab.core.clock import as_utc
from scalelab.core.errors import InvalidInput, ReportNotFound
from scalelab.core.observability import logger
from scalelab.core.settings import ReportSettings
from scalelab.steps.scaling_metric import MetricSource, metric_source
from scalelab.steps.verdict import notification
from scalelab.store.items import RunRecord
from scalelab.store.load import StoredMeasurement
from scalelab.store.runs import RunTable
from scalelab.store.scaleout import LoggedEvent
from scalelab.store.table import EVENT_SK_PREFIX, LOAD_SK_PREFIX, run_partition

# Group metrics (EnableMetricsCollection, Granularity 1Minute) and the instances' detailed
# monitoring both come in one-minute datapoints: a shorter period has nothing more to show.
METRIC_PERIOD_SECONDS = 60

Points = list[tuple[datetime, float]]


@dataclass(frozen=True)
class Evidence:
    """What the page shows besides the verdict and the workflow's state."""

    in_service: Points = field(default_factory=list)
    # The metric the group's policy tracks (the run's lab.scaling), one datapoint a minute.
    metric: Points = field(default_factory=list)
    # Why the metrics are missing, when they could not be read.
    metrics_note: str | None = None
    events: list[LoggedEvent] = field(default_factory=list)
    record: RunRecord | None = None
    # What the load generator's workers measured, round by round (network and request signals).
    load: list[StoredMeasurement] = field(default_factory=list)


# ---- gathering -------------------------------------------------------------------------------


def group_metrics(
    group_name: str, source: MetricSource, start: datetime, end: datetime
) -> tuple[Points, Points]:
    """The group's in-service instance count and the metric its policy tracks, one datapoint a minute.

    GroupInServiceInstances exists because Provision enables the group's metrics collection; the
    metric is read where AWS publishes it, with the statistic target tracking compares
    (scaling_metric.py): CPUUtilization, NetworkIn or NetworkOut by AutoScalingGroupName, EC2's own
    aggregate over the group's instances, or RequestCountPerTarget by TargetGroup.
    """
    dimensions = [{"Name": "AutoScalingGroupName", "Value": group_name}]
    queries = [
        {
            "Id": query_id,
            "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": metric_dimensions},
                "Period": METRIC_PERIOD_SECONDS,
                "Stat": stat,
            },
        }
        for query_id, namespace, name, metric_dimensions, stat in (
            ("in_service", "AWS/AutoScaling", "GroupInServiceInstances", dimensions, "Average"),
            ("metric", source.namespace, source.name, source.cloudwatch_dimensions, source.statistic),
        )
    ]
    found: dict[str, Points] = {"in_service": [], "metric": []}
    pages = (
        client("cloudwatch")
        .get_paginator("get_metric_data")
        .paginate(MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending")
    )
    for page in pages:
        for result in page["MetricDataResults"]:
            found[result["Id"]].extend(
                (as_utc(moment), float(value))
                for moment, value in zip(result["Timestamps"], result["Values"], strict=True)
            )
    return sorted(found["in_service"]), sorted(found["metric"])


def gather(run: JudgeEvent, table: RunTable, until: datetime) -> Evidence:
    """The group's metrics up to ``until``, the run's Auto Scaling event log and its ledger.

    The page is the verdict's companion, not its condition: a source that cannot be read
    (a permission missing, a group never created) is said on the page, and the verdict
    still goes out. Transient failures are raised, so the state machine retries the step.
    """
    started = as_utc(datetime.fromisoformat(run.config.started_at))
    in_service: Points = []
    metric: Points = []
    note = None
    if run.provision is None:
        note = "no group was provisioned, so there are no group metrics"
    else:
        # CloudWatch's periods start on the minute; the run's first minute is whole.
        start = started.replace(second=0, microsecond=0)
        end = max(until, start + timedelta(seconds=METRIC_PERIOD_SECONDS))
        try:
            group = run.provision.auto_scaling_group_name
            source = metric_source(run.config.lab.scaling, group, run.provision.target_group_arn)
            in_service, metric = group_metrics(group, source, start, end)
        except ClientError as exc:
            if is_transient(exc):
                raise
            logger.warning("group metrics unreadable", extra={"error": error_code(exc)})
            note = f"the group's metrics could not be read ({error_code(exc)})"
        if note is None and not in_service and not metric:
            note = (
                "CloudWatch had no datapoint of the group yet (one-minute metrics arrive a minute "
                "or two after the fact)"
            )
    events = table.table.query(run_partition(run.config.run_id), EVENT_SK_PREFIX, LoggedEvent)
    record = table.load_run(run.config.run_id)
    load = (
        table.table.query(run_partition(run.config.run_id), LOAD_SK_PREFIX, StoredMeasurement)
        if run.stress is not None and run.stress.load is not None
        else []
    )
    return Evidence(
        in_service=in_service, metric=metric, metrics_note=note, events=events, record=record, load=load
    )


# ---- the timeline picture --------------------------------------------------------------------

STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#222222",
    foreground_strong="#111111",
    foreground_subtle="#bbbbbb",
    font_family="sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=12,
    title_font_size=14,
    opacity="1",
    opacity_hover="1",
    # Each series' own stroke_style sets its width on the series; pygal's default would override it.
    stroke_width="inherit",
    stroke_width_hover="inherit",
    colors=("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"),
)
CHART = {
    "style": STYLE,
    # No script from a CDN: pygal otherwise links its tooltip script.
    "js": [],
    "disable_xml_declaration": True,
    "width": 1000,
    "show_dots": False,
    "allow_interruptions": True,
    "x_title": "seconds since the run started",
    "truncate_legend": -1,
}
PHASE_TITLES = {
    "provision": "provision",
    "wait_healthy": "targets healthy",
    "stress_to_scale_out": "stress to scale-out",
    "new_instance_healthy": "new instance healthy",
    "load_stopped_to_scale_in": "load stopped to scale-in",
}


@dataclass(frozen=True)
class Span:
    title: str
    start: float
    end: float


def _seconds(moment: datetime | str, origin: datetime) -> float:
    at = as_utc(datetime.fromisoformat(moment)) if isinstance(moment, str) else as_utc(moment)
    return round((at - origin).total_seconds(), 3)


def stress_window(run: JudgeEvent, judged_at: datetime) -> tuple[datetime, datetime] | None:
    """From the stress command to the end of its burn (it ends by itself), or to the judging."""
    if run.stress is None:
        return None
    began = as_utc(datetime.fromisoformat(run.stress.started_at))
    return began, min(began + timedelta(seconds=run.config.stress.duration_seconds), judged_at)


def spans(verdict: Verdict, run: JudgeEvent, judged_at: datetime) -> list[Span]:
    """The phases as bars, and the stress window."""
    origin = as_utc(datetime.fromisoformat(run.config.started_at))
    bars = [
        Span(
            PHASE_TITLES.get(phase.name, phase.name),
            _seconds(phase.started_at, origin),
            _seconds(phase.ended_at, origin),
        )
        for phase in verdict.timeline
    ]
    window = stress_window(run, judged_at)
    if window is not None:
        bars.append(Span("stress", _seconds(window[0], origin), _seconds(window[1], origin)))
    return bars


def _svg(chart: Any) -> str:
    """The chart as inline SVG, without the script pygal always embeds (its tooltips' config):
    the page is static, and its Content Security Policy would refuse the script anyway."""
    root = chart.render_tree()
    for parent in root.iter():
        for child in list(parent):
            if child.tag == "script":
                parent.remove(child)
    return ElementTree.tostring(root, encoding="unicode")


def _vertical_lines(at: Iterable[float], top: float) -> list[tuple[float | None, float | None]]:
    """Vertical marks in one series: each a line from 0 to ``top``, the next after a break."""
    lines: list[tuple[float | None, float | None]] = []
    for x in at:
        lines += [(x, 0.0), (x, top), (None, None)]
    return lines


def phases_chart(bars: Sequence[Span], end: float) -> str:
    chart = pygal.XY(
        **CHART,
        height=150 + 34 * max(len(bars), 1),
        title="Phases",
        show_y_labels=False,
        show_y_guides=False,
        range=(0, len(bars) + 1),
        xrange=(0, end),
    )
    for row, bar in enumerate(bars):
        y = float(len(bars) - row)
        # Dots too: a phase shorter than the picture's resolution still shows.
        chart.add(
            bar.title,
            [(bar.start, y), (bar.end, y)],
            stroke_style={"width": "16px", "linecap": "butt"},
            show_dots=True,
            dots_size=6,
        )
    if not bars:
        chart.add("no phase completed", [(0.0, 1.0), (0.0, 1.0)])
    return _svg(chart)


def group_chart(run: JudgeEvent, evidence: Evidence, judged_at: datetime, end: float) -> str:
    origin = as_utc(datetime.fromisoformat(run.config.started_at))
    counts = [value for _, value in evidence.in_service]
    top = max([*counts, float(run.config.lab.max_size), 1.0]) + 1
    scaling = run.config.lab.scaling
    source = metric_source(scaling, "", "")  # only its names and unit are drawn
    # Percent on 0-100; a count or bytes up to a little above the target or the highest value.
    highest = max([scaling.target, *(value for _, value in evidence.metric)])
    secondary = (0.0, 100.0) if source.unit == "Percent" else (0.0, highest * 1.15)
    chart = pygal.XY(
        **CHART,
        height=420,
        title=f"The group: instances in service and {source.title[0].lower()}{source.title[1:]}",
        y_title="instances in service",
        range=(0, top),
        secondary_range=secondary,
        xrange=(0, end),
    )
    # A count holds until the next datapoint: drawn as steps.
    steps: list[tuple[float | None, float | None]] = []
    for moment, value in evidence.in_service:
        x = _seconds(moment, origin)
        if steps and steps[-1][1] != value:
            steps.append((x, steps[-1][1]))
        steps.append((x, value))
    chart.add("instances in service", steps, stroke_style={"width": "3px"})
    chart.add(
        f"{source.title}, {source.per_point} (right axis)",
        [(_seconds(moment, origin), value) for moment, value in evidence.metric],
        secondary=True,
        stroke_style={"width": "2px"},
    )
    chart.add(
        f"target: {scaling.describe()} (right axis)",
        [(0.0, scaling.target), (end, scaling.target)],
        secondary=True,
        show_dots=False,
        stroke_style={"width": "1px", "dasharray": "6,3"},
    )
    window = stress_window(run, judged_at)
    if window is not None:
        chart.add(
            "stress began, ended",
            _vertical_lines((_seconds(window[0], origin), _seconds(window[1], origin)), top),
            stroke_style={"width": "2px", "dasharray": "8,4"},
        )
    for title, kinds in (
        ("launches", ("EC2 Instance Launch Successful",)),
        ("failed launches", ("EC2 Instance Launch Unsuccessful",)),
        ("other Auto Scaling events", None),
    ):
        known = ("EC2 Instance Launch Successful", "EC2 Instance Launch Unsuccessful")
        moments = [
            _seconds(event.time, origin)
            for event in evidence.events
            if (event.detail_type in kinds if kinds else event.detail_type not in known)
        ]
        if moments:
            chart.add(title, _vertical_lines(moments, top), stroke_style={"width": "2px", "dasharray": "2,3"})
    return _svg(chart)


def load_rates(run: JudgeEvent, measurements: Sequence[StoredMeasurement]) -> dict[str, Points]:
    """Each round's rate as the workers measured it, summed over the round's workers, at the
    round's end: requests per second (answered 2xx, failed) and, for a network load, bytes per second."""
    rounds: dict[int, list[StoredMeasurement]] = {}
    for measurement in measurements:
        rounds.setdefault(measurement.round, []).append(measurement)
    rates: dict[str, Points] = {"requests/s answered 2xx": [], "requests/s failed": []}
    metric = run.stress.load.metric if run.stress is not None and run.stress.load is not None else ""
    moved = {"network_in": "bytes/s sent", "network_out": "bytes/s received"}.get(metric)
    if moved:
        rates[moved] = []
    for _round, workers in sorted(rounds.items()):
        at = max(as_utc(datetime.fromisoformat(worker.ended_at)) for worker in workers)
        per_second = [(worker, max(worker.seconds, 0.001)) for worker in workers]
        rates["requests/s answered 2xx"].append((at, sum(w.requests_ok / s for w, s in per_second)))
        rates["requests/s failed"].append((at, sum(w.requests_failed / s for w, s in per_second)))
        if moved:
            field_of = "bytes_sent" if metric == "network_in" else "bytes_received"
            rates[moved].append((at, sum(getattr(w, field_of) / s for w, s in per_second)))
    return rates


def load_chart(run: JudgeEvent, evidence: Evidence, end: float) -> str:
    """The load as its generator measured it, on the timeline's axis; empty for the cpu burn."""
    if run.stress is None or run.stress.load is None:
        return ""
    origin = as_utc(datetime.fromisoformat(run.config.started_at))
    plan = run.stress.load
    rates = load_rates(run, evidence.load)
    bytes_series = [name for name in rates if name.startswith("bytes")]
    chart = pygal.XY(
        **{**CHART, "show_dots": True},
        height=360,
        title=(
            f"The load ({plan.metric}): as the generator measured it; planned {plan.requests_per_second:.3g} "
            "requests/s" + (f", {plan.bytes_per_second:.3g} bytes/s" if plan.bytes_per_second else "")
        ),
        y_title="requests per second",
        xrange=(0, end),
    )
    for name, points in rates.items():
        chart.add(
            name + (" (right axis)" if name in bytes_series else ""),
            [(_seconds(moment, origin), value) for moment, value in points],
            secondary=name in bytes_series,
            stroke_style={"width": "2px"},
        )
    rows = (
        (
            measurement.round,
            measurement.worker,
            _seconds(measurement.ended_at, origin),
            measurement.seconds,
            measurement.requests_ok,
            measurement.requests_failed,
            measurement.bytes_sent,
            measurement.bytes_received,
        )
        for measurement in evidence.load
    )
    listed = _table(
        ("round", "worker", "ended at (s)", "seconds", "2xx", "failed", "bytes sent", "bytes received"),
        rows,
        "load-list",
    )
    return f'<figure id="load">{_svg(chart)}</figure>\n<p class="note">{_e(plan.note)}</p>\n' + (
        listed if evidence.load else '<p class="note">No load worker recorded a round.</p>'
    )


# ---- the page --------------------------------------------------------------------------------

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1040px; color: #222; background: #fff; }
.verdict { font-size: 1.6em; font-weight: bold; padding: .3em .6em; display: inline-block; color: #fff; }
.passed { background: #2e7d32; } .failed { background: #c62828; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1.5em; }
th, td { text-align: left; border-bottom: 1px solid #ddd; padding: .3em .5em; vertical-align: top; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; white-space: pre-wrap; }
.note { color: #555; font-style: italic; }
figure { margin: 0 0 1em; }
"""
# Nothing may load: inline styles only, no script, no image but inline data.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{_e(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _diagnosis(report: dict[str, Any]) -> str:
    """The ``diagnosis`` of the JSON report: a heading and a preformatted block for each finding."""
    findings = report.get("diagnosis")
    if not isinstance(findings, list) or not findings:
        return ""
    parts = []
    for finding in findings:
        if not isinstance(finding, dict):
            continue
        lines = finding.get("lines") or []
        text = "\n".join(str(line) for line in lines) if isinstance(lines, list) else str(lines)
        parts.append(f"<h3>{_e(finding.get('title', ''))}</h3><pre>{_e(text)}</pre>")
    return '<section id="diagnosis"><h2>Diagnosis</h2>' + "".join(parts) + "</section>" if parts else ""


def _at(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _resources(evidence: Evidence) -> str:
    """The run's ledger after Teardown: what was removed and when, what is still there."""
    record = evidence.record
    if record is None:
        return '<p class="note">The run has no record, so its ledger is unknown.</p>'
    rows = [
        (kind, entry.id, _at(entry.removed_at))
        for kind, entry in sorted(record.removed.items(), key=lambda item: (item[1].removed_at, item[0]))
    ]
    rows += [
        (kind, physical_id, "not removed: still in the ledger (the janitor's sweep removes it)")
        for kind, physical_id in sorted(record.resources.items())
    ]
    rows += [
        (kind, physical_id, "refused: not tagged for this run, never deleted by scalelab")
        for kind, physical_id in sorted(record.refused.items())
    ]
    if not rows:
        return '<p class="note">The ledger is empty: the run created nothing.</p>'
    done = (
        f"<p>Everything was removed by {_at(record.torn_down_at)}.</p>"
        if record.torn_down_at is not None
        else ""
    )
    return done + _table(("kind", "id or ARN", "removed at"), rows, "resources")


def render_page(report: dict[str, Any], verdict: Verdict, run: JudgeEvent, evidence: Evidence) -> str:
    """The page for ``report`` (the JSON report's content), with ``evidence`` drawn and listed."""
    judged_at = as_utc(datetime.fromisoformat(verdict.judged_at))
    origin = as_utc(datetime.fromisoformat(run.config.started_at))
    bars = spans(verdict, run, judged_at)
    # The picture spans the run up to the judging, and whatever AWS stamped later than Judge's
    # whole second.
    end = max(
        [
            1.0,
            _seconds(judged_at, origin),
            *(bar.end for bar in bars),
            *(_seconds(moment, origin) for moment, _ in evidence.in_service + evidence.metric),
            *(_seconds(event.time, origin) for event in evidence.events),
        ]
    )
    status = "PASSED" if verdict.passed else "FAILED"
    checks = _table(
        ("check", "passed", "detail"),
        ((check.name, "yes" if check.passed else "no", check.detail) for check in verdict.checks),
        "check-list",
    )
    note = f'<p class="note">{_e(evidence.metrics_note)}</p>' if evidence.metrics_note else ""
    events = _table(
        ("at (s)", "event", "instance", "status", "cause or status message"),
        (
            (
                _seconds(event.time, origin),
                event.detail_type,
                event.instance_id or "-",
                event.status_code,
                event.status_message or event.cause,
            )
            for event in evidence.events
        ),
        "events",
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>scalelab run {_e(verdict.run_id)}: {status}</title>
<style>{CSS}</style></head>
<body>
<header><h1>scalelab run {_e(verdict.run_id)}</h1>
<p>lab {_e(run.config.lab.name)}, started {_e(run.config.started_at)}, judged {_e(verdict.judged_at)}</p>
<p id="verdict" class="verdict {status.lower()}">{status}</p>
<p id="reason">{_e(verdict.reason)}</p></header>
<section id="checks"><h2>Checks</h2>
{checks}
</section>
<section id="timeline"><h2>Timeline</h2>
<figure id="phases">{phases_chart(bars, end)}</figure>
<figure id="group">{group_chart(run, evidence, judged_at, end)}</figure>
{load_chart(run, evidence, end)}
{note}
{_table(("phase", "from (s)", "to (s)"), ((bar.title, bar.start, bar.end) for bar in bars), "phase-list")}
<h3>Auto Scaling events</h3>
{events if evidence.events else '<p class="note">No Auto Scaling event reached the run.</p>'}
</section>
{_diagnosis(report)}
<section id="resources"><h2>Resources the run created</h2>
{_resources(evidence)}
</section>
<footer><p>JSON report: s3://{_e(verdict.report.bucket)}/{_e(verdict.report.key)}</p></footer>
</body></html>
"""


# ---- publishing ------------------------------------------------------------------------------


def publish_report(
    verdict: Verdict, table: RunTable, settings: ReportSettings, now: float | None = None
) -> Verdict:
    """Write the page beside the JSON report Judge wrote; the verdict with its notification,
    now linking the page.

    It runs after Teardown, so the ledger says when each resource went. A pre-signed URL acts
    with its signer's permissions, so this step's role may read the reports (s3:GetObject on the
    reports prefix) for the link to work.
    """
    report_at = verdict.report
    page_at = ReportLocation(bucket=report_at.bucket, key=report_at.key.removesuffix(".json") + ".html")
    if verdict.page != page_at:
        found = f"s3://{verdict.page.bucket}/{verdict.page.key}" if verdict.page else "nothing"
        raise InvalidInput(
            "invalid PublishReport event: verdict.page.bucket and verdict.page.key must name the page "
            "beside verdict.report.bucket and verdict.report.key (the .json key with .html), as Judge "
            f"wrote them: got {found} for s3://{report_at.bucket}/{report_at.key}"
        )
    now = time.time() if now is None else now
    logger.append_keys(run_id=verdict.run_id)
    s3 = client("s3")
    try:
        stored = s3.get_object(Bucket=report_at.bucket, Key=report_at.key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) not in {"NoSuchKey", "NoSuchBucket"}:
            raise
        raise ReportNotFound(
            f"s3://{report_at.bucket}/{report_at.key} does not exist ({error_code(exc)}): the "
            "page is drawn from the JSON report Judge writes; pass the verdict Judge returned"
        ) from None
    report = json.loads(stored)
    run = JudgeEvent.model_validate(report["run"])
    if run.config.run_id != verdict.run_id:
        raise InvalidInput(
            f"invalid PublishReport event: verdict.run_id {verdict.run_id!r} is not the run of the "
            f"report s3://{report_at.bucket}/{report_at.key} ({run.config.run_id!r})"
        )
    # The page and the message say what Judge stored, whatever else the event carries.
    judged = Verdict.model_validate(report["verdict"])
    moment = datetime.fromtimestamp(now, UTC)
    page = render_page(report, judged, run, gather(run, table, moment))
    s3.put_object(
        Bucket=page_at.bucket, Key=page_at.key, Body=page.encode(), ContentType="text/html; charset=utf-8"
    )
    link = url_signer("s3").generate_presigned_url(
        "get_object",
        Params={"Bucket": page_at.bucket, "Key": page_at.key},
        ExpiresIn=settings.report_link_expiry_seconds,
    )
    expires_at = moment.replace(microsecond=0) + timedelta(seconds=settings.report_link_expiry_seconds)
    logger.info("report page written", extra={"page": f"s3://{page_at.bucket}/{page_at.key}"})
    return judged.model_copy(
        update={"notification": notification(judged, run.config.lab.name, link, expires_at)}
    )
