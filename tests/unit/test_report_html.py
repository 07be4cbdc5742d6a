"""The HTML report: written after Teardown beside the JSON one, self-contained, escaped, with the
group's metrics drawn and each resource's removal time."""

from __future__ import annotations

import re
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from scalelab.contracts.judge import JudgeEvent, Verdict
from scalelab.contracts.load import Measurement
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.run import RunConfig
from scalelab.contracts.scaling import Scaling
from scalelab.core.clock import utc_iso
from scalelab.core.settings import ConfigurationError, LoadSettings, ReportSettings, TableSettings
from scalelab.steps.load import plan_load
from scalelab.steps.provision import provision_lab
from scalelab.steps.report_html import Evidence, gather, load_rates, publish_report, render_page
from scalelab.steps.teardown import teardown_lab
from scalelab.store.items import RemovedResource, RunRecord
from scalelab.store.load import LoadTable
from scalelab.store.runs import RunTable
from scalelab.store.scaleout import LoggedEvent
from tests.unit.test_verdict import BUCKET, T0, at, full_run, judge

RUN = "report-0001"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


@pytest.fixture
def settings(account: None) -> ReportSettings:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return ReportSettings(REPORTS_BUCKET=BUCKET, REPORT_LINK_EXPIRY_SECONDS=3600)


def page_of(verdict: Verdict) -> str:
    assert verdict.page is not None
    obj = boto3.client("s3").get_object(Bucket=verdict.page.bucket, Key=verdict.page.key)
    assert obj["ContentType"] == "text/html; charset=utf-8"
    return str(obj["Body"].read().decode())


def put_group_metrics(group: str, seconds_and_values: list[tuple[float, float, float]]) -> None:
    """What AWS records of the group: in-service count (metrics collection) and average CPU."""
    cloudwatch = boto3.client("cloudwatch")
    dimensions = [{"Name": "AutoScalingGroupName", "Value": group}]
    for seconds, in_service, cpu in seconds_and_values:
        moment = datetime.fromtimestamp(T0 + seconds, UTC)
        cloudwatch.put_metric_data(
            Namespace="AWS/AutoScaling",
            MetricData=[
                {
                    "MetricName": "GroupInServiceInstances",
                    "Dimensions": dimensions,
                    "Timestamp": moment,
                    "Value": in_service,
                }
            ],
        )
        cloudwatch.put_metric_data(
            Namespace="AWS/EC2",
            MetricData=[
                {"MetricName": "CPUUtilization", "Dimensions": dimensions, "Timestamp": moment, "Value": cpu}
            ],
        )


def published(
    state: dict[str, Any], run_table: RunTable, settings: ReportSettings, torn_down: bool = True
) -> Verdict:
    """Judge, Teardown (one pass, at T0 + 520), then PublishReport at T0 + 560, as the workflow runs them."""
    verdict = judge(state, run_table, settings)
    if torn_down:
        teardown_lab(RUN, run_table, now=T0 + 520)
    return publish_report(verdict, run_table, settings, now=T0 + 560)


def test_the_page_lies_beside_the_json_report_and_loads_nothing_from_elsewhere(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    verdict = published(full_run(config, lab), run_table, settings)

    assert verdict.page is not None
    assert verdict.page.key == verdict.report.key.removesuffix(".json") + ".html"
    page = page_of(verdict)
    assert '<p id="verdict" class="verdict passed">PASSED</p>' in page
    assert re.search(r'<section id="timeline">.*<svg[^>]*class="pygal-chart"', page, re.DOTALL)
    assert "<script" not in page
    assert not re.search(r'(src|href)\s*=\s*"?(https?:)?//', page)
    assert "@import" not in page
    assert "Content-Security-Policy" in page
    # No diagnosis in the report: no section for it.
    assert 'id="diagnosis"' not in page


def test_the_page_lists_each_resource_with_when_teardown_removed_it(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    page = page_of(published(full_run(config, lab), run_table, settings))

    ledger = page.split('<table id="resources">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", ledger)
    assert len(rows) == 7
    removed_at = datetime.fromtimestamp(T0 + 520, UTC).isoformat(timespec="seconds")
    assert ("auto_scaling_group", lab.auto_scaling_group_name, removed_at) in rows
    assert {removed for _, _, removed in rows} == {removed_at}
    assert f"Everything was removed by {removed_at}." in page


def test_a_resource_teardown_could_not_remove_is_listed_as_left(
    config: RunConfig, lab: ProvisionResult
) -> None:
    run = JudgeEvent.model_validate(full_run(config, lab))
    record = RunRecord(
        run_id=RUN,
        resources={"alb_security_group": "sg-left"},
        removed={"listener": RemovedResource(id="arn:listener", removed_at=int(T0 + 520))},
    )

    page = render_page({}, verdict_for(run), run, Evidence(record=record))

    ledger = page.split('<section id="resources">', 1)[1].split("</section>", 1)[0]
    assert "<tr><td>listener</td><td>arn:listener</td><td>2027-01-15T08:08:40+00:00</td></tr>" in ledger
    assert "<td>sg-left</td><td>not removed: still in the ledger" in ledger
    assert "Everything was removed" not in ledger


def test_the_notification_says_the_verdict_first_and_links_the_page_for_a_bounded_time(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    state = full_run(config, lab)
    state["new_healthy"] = None
    state["error"] = {"Error": "TargetsNotHealthy", "Cause": "new instance never healthy"}
    verdict = published(state, run_table, settings)

    lines = verdict.notification.splitlines()
    assert lines[0] == f"FAILED: scalelab run {RUN} (lab {config.lab.name})"
    assert lines[2] == verdict.reason
    link = next(line.split(": ", 1)[1] for line in lines if line.startswith("Report (a web page): "))
    url = urllib.parse.urlsplit(link)
    query = dict(urllib.parse.parse_qsl(url.query))
    assert url.path.endswith(f"/{config.lab.name}/{RUN}.html")
    assert query["X-Amz-Expires"] == "3600"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert "X-Amz-Signature" in query
    assert f"works until {utc_iso(T0 + 560 + 3600)} at the latest" in verdict.notification
    # The signed link is not kept in the JSON report.
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=verdict.report.key)["Body"].read().decode()
    assert "X-Amz-Signature" not in body
    assert '"page"' in body


def test_judges_own_notification_is_plain_and_names_where_the_reports_are(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable, settings: ReportSettings
) -> None:
    # What Notify publishes when the page could not be written.
    verdict = judge(full_run(config, lab), run_table, settings)

    lines = verdict.notification.splitlines()
    assert lines[0] == f"PASSED: scalelab run {RUN} (lab {config.lab.name})"
    assert lines[2] == verdict.reason
    assert "Report (a web page)" not in verdict.notification
    assert lines[-1] == f"JSON report: s3://{BUCKET}/{verdict.report.key}"
    assert verdict.page is not None
    assert lines[-2] == f"HTML report: s3://{BUCKET}/{verdict.page.key}"
    with pytest.raises(boto3.client("s3").exceptions.NoSuchKey):
        boto3.client("s3").get_object(Bucket=BUCKET, Key=verdict.page.key)


def test_the_link_lifetime_is_bounded_by_what_sigv4_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("REPORT_LINK_EXPIRY_SECONDS", "604801")
    with pytest.raises(ConfigurationError, match="REPORT_LINK_EXPIRY_SECONDS"):
        ReportSettings.from_env()


def test_the_group_metrics_and_the_event_log_are_read_for_the_picture(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable
) -> None:
    put_group_metrics(
        lab.auto_scaling_group_name,
        [(120, 2, 3), (180, 2, 60), (240, 2, 100), (300, 2, 100), (420, 3, 70)],
    )
    run = JudgeEvent.model_validate(full_run(config, lab))

    evidence = gather(run, run_table, datetime.fromtimestamp(T0 + 500, UTC))

    assert [value for _, value in evidence.in_service] == [2, 2, 2, 2, 3]
    assert [value for _, value in evidence.metric] == [3, 60, 100, 100, 70]
    assert evidence.metrics_note is None
    assert evidence.record is not None
    assert evidence.record.resources["auto_scaling_group"] == lab.auto_scaling_group_name
    page = render_page({}, verdict_for(run), run, evidence)
    group = page.split('<figure id="group">', 1)[1].split("</figure>", 1)[0]
    # Both series are drawn as lines (pygal draws a series with points as a path of class "line").
    assert group.count('class="line reactive nofill"') >= 3


def test_the_picture_draws_the_runs_own_metric_with_its_target(
    prepare: Any, provision_settings: Any, run_table: RunTable
) -> None:
    config = prepare("report-requests", {"lab": {"scaling": {"metric": "request_count", "target": 600}}})
    lab = provision_lab(config, provision_settings, run_table)
    cloudwatch = boto3.client("cloudwatch")
    # RequestCountPerTarget by TargetGroup, as the load balancer publishes it; the CPU is not drawn.
    group = {"Name": "TargetGroup", "Value": lab.target_group_arn.split(":", 5)[5]}
    for seconds, value in ((180, 120.0), (240, 980.0), (300, 1210.0)):
        cloudwatch.put_metric_data(
            Namespace="AWS/ApplicationELB",
            MetricData=[
                {
                    "MetricName": "RequestCountPerTarget",
                    "Dimensions": [group],
                    "Timestamp": datetime.fromtimestamp(T0 + seconds, UTC),
                    "Value": value,
                    "Unit": "Count",
                }
            ],
        )
    put_group_metrics(lab.auto_scaling_group_name, [(180, 2, 99), (240, 2, 99), (300, 3, 99)])
    run = JudgeEvent.model_validate(full_run(config, lab))

    evidence = gather(run, run_table, datetime.fromtimestamp(T0 + 500, UTC))

    assert [value for _, value in evidence.metric] == [120.0, 980.0, 1210.0]
    page = render_page({}, verdict_for(run), run, evidence)
    figure = page.split('<figure id="group">', 1)[1].split("</figure>", 1)[0]
    assert (
        "<title>The group: instances in service and the target group's requests per target</title>" in figure
    )
    assert "target: 600 requests per target per minute (right axis)" in figure
    assert "average CPU" not in figure


def test_a_group_without_datapoints_says_so(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable
) -> None:
    run = JudgeEvent.model_validate(full_run(config, lab))

    evidence = gather(run, run_table, datetime.fromtimestamp(T0 + 500, UTC))

    assert evidence.in_service == evidence.metric == []
    assert evidence.metrics_note is not None
    assert "no datapoint" in evidence.metrics_note


def verdict_for(run: JudgeEvent, reason: str = "passed: fine") -> Verdict:
    return Verdict.model_validate(
        {
            "run_id": run.config.run_id,
            "passed": reason.startswith("passed"),
            "reason": reason,
            "checks": [{"name": "healthy", "passed": False, "detail": reason}],
            "timeline": [
                {"name": "provision", "started_at": at(0), "ended_at": at(60), "seconds": 60},
            ],
            "report": {"bucket": BUCKET, "key": "reports/x/y.json"},
            "page": {"bucket": BUCKET, "key": "reports/x/y.html"},
            "judged_at": at(500),
        }
    )


def test_every_string_from_users_and_aws_is_escaped(config: RunConfig, lab: ProvisionResult) -> None:
    run = JudgeEvent.model_validate(full_run(config, lab))
    event = LoggedEvent(
        event_id="e-1",
        detail_type="EC2 Instance Launch Unsuccessful",
        time=datetime.fromtimestamp(T0 + 300, UTC),
        auto_scaling_group_name=lab.auto_scaling_group_name,
        activity_id="a-1",
        status_code="Failed",
        status_message=HOSTILE,
    )
    record = RunRecord(run_id=RUN, resources={"launch_template": HOSTILE}, refused={"listener": HOSTILE})
    report: dict[str, Any] = {"diagnosis": [{"title": HOSTILE, "lines": [HOSTILE, "second line"]}]}

    page = render_page(
        report,
        verdict_for(run, f"failed at healthy: {HOSTILE}"),
        run,
        Evidence(events=[event], record=record),
    )

    assert "<script" not in page
    assert "<img" not in page
    assert (
        page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 6
    )  # reason x2, title, pre, ledger x2, event
    assert "&amp;amp;" in page


def test_the_diagnosis_is_a_heading_and_a_preformatted_block_each(
    config: RunConfig, lab: ProvisionResult
) -> None:
    run = JudgeEvent.model_validate(full_run(config, lab))
    report = {
        "diagnosis": [
            {"title": "Target health", "lines": ["i-1: Target.Timeout", "i-2: Target.Timeout"]},
            {"title": "Bootstrap log of i-1", "lines": ["npm ERR! missing script"]},
        ]
    }

    page = render_page(report, verdict_for(run, "failed at healthy: x"), run, Evidence())

    section = page.split('<section id="diagnosis">', 1)[1].split("</section>", 1)[0]
    assert re.findall(r"<h3>(.*?)</h3>", section) == ["Target health", "Bootstrap log of i-1"]
    assert re.findall(r"<pre>(.*?)</pre>", section, re.DOTALL) == [
        "i-1: Target.Timeout\ni-2: Target.Timeout",
        "npm ERR! missing script",
    ]
    assert 'id="diagnosis"' not in render_page({"diagnosis": []}, verdict_for(run), run, Evidence())


def test_the_load_the_generator_measured_is_drawn_round_by_round(
    config: RunConfig, lab: ProvisionResult, run_table: RunTable
) -> None:
    state = full_run(config, lab)
    plan = plan_load(
        run_id=RUN,
        scaling=Scaling(metric="request_count", target=600),
        desired_capacity=2,
        base_url="http://scalelab-report-0001.us-east-1.elb.amazonaws.com",
        health_path="/home",
        duration_seconds=600,
        settings=LoadSettings(
            LOAD_STATE_MACHINE_ARN="arn:aws:states:us-east-1:123456789012:stateMachine:load",
            LOAD_REQUESTS_PER_SECOND_CAP=100,
            LOAD_BYTES_PER_SECOND_CAP=5_000_000,
            LOAD_WORKERS_CAP=10,
            LOAD_ROUND_SECONDS=60,
        ),
        now=T0 + 160,
    )
    state["stress"] = {"command_id": None, "instance_ids": ["a", "b"], "started_at": at(160), "load": plan}
    run = JudgeEvent.model_validate(state)
    table = LoadTable(TableSettings.from_env())
    # Two rounds of two workers: 20 requests a second in the first, 15 (and 3 failed) in the second.
    for round_index, ok, failed in ((0, 1200, 0), (1, 900, 180)):
        for worker in (0, 1):
            table.put_measurement(
                Measurement(
                    run_id=RUN,
                    metric="request_count",
                    round=round_index,
                    worker=worker,
                    started_at=at(160 + 60 * round_index),
                    ended_at=at(220 + 60 * round_index),
                    seconds=60.0,
                    requests_ok=ok // 2,
                    requests_failed=failed // 2,
                    bytes_sent=0,
                    bytes_received=17 * ok // 2,
                ),
                T0,
            )

    evidence = gather(run, run_table, datetime.fromtimestamp(T0 + 500, UTC))
    rates = load_rates(run, evidence.load)
    page = render_page({}, verdict_for(run), run, evidence)

    assert [(round(value, 3)) for _, value in rates["requests/s answered 2xx"]] == [20.0, 15.0]
    assert [(round(value, 3)) for _, value in rates["requests/s failed"]] == [0.0, 3.0]
    load = page.split('<figure id="load">', 1)[1].split("</figure>", 1)[0]
    assert "planned 40 requests/s" in load
    assert load.count('class="line reactive nofill"') >= 2
    assert 'id="load-list"' in page
    assert "twice the target 600" in page
