"""The `scalelab` commands for a deployed stack (run, status, runs, report, sweep), against the
emulated account: to them it is a deployed stack like any other, reached with --endpoint-url."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from rich.console import Console
from scalelab_rehearsal import cli, operate
from scalelab_rehearsal.rehearse import merged_input

from tests.support.emulated import runs_leave_their_resources, settle
from tests.workflow.conftest import Rehearsal
from tests.workflow.test_cli import NEVER_HEALTHY


@dataclass
class Said:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def scalelab(rehearsal: Rehearsal, capsys: pytest.CaptureFixture[str]) -> Any:
    """``scalelab COMMAND ...`` in-process against the emulated stack; what it printed and its exit code.

    The functions run in this process too: before each command, the account is left to settle
    and their output so far is set aside, so that a command's output is its own.
    """

    def command(*argv: str, settled: bool = True) -> Said:
        if settled:
            settle(rehearsal.emulator)
        capsys.readouterr()
        code = cli.main([*argv, "--endpoint-url", rehearsal.emulator.endpoint])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Said(code, captured.out, captured.err)

    return command


@pytest.fixture
def run_input(tmp_path: Path) -> Path:
    """The rehearsal's run input (a poll a second, deadlines of seconds), as a file to pass to --input."""
    path = tmp_path / "input.json"
    path.write_text(json.dumps(merged_input(None)))
    return path


def _report_location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


# ---- a passing run, followed, then looked at every way -----------------------------------------------


def test_run_follows_a_passing_run_to_its_verdict_and_where_its_report_is(
    scalelab: Any, run_input: Path
) -> None:
    said = scalelab("run", "--input", str(run_input), "--name", "nightly-1", "--poll-seconds", "0.1")

    assert said.code == 0, said.err
    assert "Started nightly-1 on stack scalelab (us-east-1)" in said.out
    for line in ("Prepare started", "Provision done in ", "Scale-out done in ", "Execution succeeded after "):
        assert line in said.out
    assert " Ledger: 7 resources recorded" in said.out  # Provision's, read from the run record
    assert "\nPASSED  passed: 2 healthy targets " in said.out
    assert "Resources  none left (torn down " in said.out
    uri = next(line.split()[1] for line in said.out.splitlines() if line.startswith("Report "))
    bucket, key = _report_location(uri)
    assert key == "reports/default/nightly-1.json"
    stored = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored["verdict"]["passed"] is True


def test_status_runs_and_report_show_a_finished_run(scalelab: Any, run_input: Path) -> None:
    assert scalelab("run", "--input", str(run_input), "--name", "nightly-2", "--lab", "blue").code == 0

    status = scalelab("status", "nightly-2", "--json")
    shown = status.json()
    assert status.code == 0
    assert shown["run_id"] == "nightly-2"
    assert shown["lab"] == "blue"
    assert shown["status"] == "passed"
    assert shown["passed"] is True
    assert shown["reason"].startswith("passed: ")
    assert shown["execution_status"] == "SUCCEEDED"
    assert shown["execution_arn"].endswith(
        ":execution:" + shown["execution_arn"].split(":")[-2] + ":nightly-2"
    )
    assert [phase["name"] for phase in shown["phases"]][:2] == ["prepare", "provision"]
    assert shown["phases"][-1]["name"] == "notify"
    assert shown["resources"] == {}
    assert shown["torn_down_at"]
    assert shown["report_uri"].endswith("/reports/blue/nightly-2.json")

    by_arn = scalelab("status", shown["execution_arn"])
    assert by_arn.code == 0
    assert "\nPASSED  passed: " in by_arn.out
    assert "Run        nightly-2 (lab blue)" in by_arn.out
    assert "Phases (from the execution history):" in by_arn.out

    listed = scalelab("runs", "--json")
    assert listed.code == 0
    (row,) = listed.json()
    assert row["run_id"] == "nightly-2"
    assert row["lab"] == "blue"
    assert row["status"] == "passed"
    assert isinstance(row["time_to_healthy_seconds"], float)
    assert isinstance(row["stress_to_scale_out_seconds"], float)
    assert 0 < row["total_seconds"] < 60
    table = scalelab("runs", "--lab", "blue")
    header, first = table.out.splitlines()[:2]
    assert header.split() == [
        "started",
        "run",
        "lab",
        "verdict",
        "to",
        "healthy",
        "stress",
        "to",
        "scale-out",
        "total",
    ]
    assert first.split()[2:5] == ["nightly-2", "blue", "passed"]
    assert "No runs of lab 'green'" in scalelab("runs", "--lab", "green").out

    report = scalelab("report", "nightly-2", "--json")
    assert report.code == 0
    assert report.json()["verdict"]["run_id"] == "nightly-2"
    printed = scalelab("report", "nightly-2")
    assert printed.code == 0
    assert printed.out.startswith("PASSED  passed: ")
    assert "Timeline (from the verdict):" in printed.out
    assert "stress_to_scale_out" in printed.out


def test_report_html_writes_the_html_report_judge_stored_and_says_when_there_is_none(
    scalelab: Any, run_input: Path, tmp_path: Path
) -> None:
    assert scalelab("run", "--input", str(run_input), "--name", "nightly-3").code == 0
    bucket, key = _report_location(scalelab("status", "nightly-3", "--json").json()["report_uri"])
    html_key = key.removesuffix(".json") + ".html"
    page = b"<!doctype html><title>nightly-3</title><p>PASSED</p>"
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=html_key, Body=page, ContentType="text/html")
    written = tmp_path / "nightly-3.html"

    said = scalelab("report", "nightly-3", "--html", str(written))

    assert said.code == 0
    assert written.read_bytes() == page
    assert f"Wrote s3://{bucket}/{html_key} to {written}" in said.err

    s3.delete_object(Bucket=bucket, Key=html_key)
    missing = scalelab("report", "nightly-3", "--html", str(tmp_path / "none.html"))
    assert missing.code == 2
    assert f"run nightly-3 has no HTML report (s3://{bucket}/{html_key} does not exist" in missing.err
    assert not (tmp_path / "none.html").exists()


# ---- failures and bad usage ----------------------------------------------------------------------------


@pytest.mark.scenario("no-scale-out")
def test_a_failing_run_exits_1_with_the_reason_and_status_and_runs_say_so(
    scalelab: Any, run_input: Path
) -> None:
    said = scalelab("run", "--input", str(run_input), "--name", "no-scale-out-1", "--poll-seconds", "0.1")

    assert said.code == 1
    assert " Scale-out failed in " in said.out
    assert "Execution failed after " in said.out
    assert "\nFAILED  failed at scale_out: " in said.out
    status = scalelab("status", "no-scale-out-1")
    assert status.code == 1
    assert "\nFAILED  failed at scale_out: " in status.out
    (row,) = scalelab("runs", "--json").json()
    assert row["status"] == "failed"
    assert row["stress_to_scale_out_seconds"] is None
    assert scalelab("report", "no-scale-out-1").code == 1


def test_input_the_workflow_rejects_exits_2_naming_the_fields(scalelab: Any, tmp_path: Path) -> None:
    given = tmp_path / "input.json"
    given.write_text(json.dumps({"lab": {"min_size": 9, "max_size": 3}}))

    said = scalelab("run", "--input", str(given), "--poll-seconds", "0.1", "--json")

    assert said.code == 2
    assert "InvalidInput" in said.json()["reason"] or "max_size" in said.json()["reason"]
    assert "the run input was rejected" in said.err


def test_no_follow_starts_the_run_and_status_finds_it_unknown_runs_and_stacks_exit_2(
    rehearsal: Rehearsal, scalelab: Any, run_input: Path
) -> None:
    runtime, stack = rehearsal.emulator.runtime, rehearsal.emulator.stack
    assert runtime is not None
    assert stack is not None
    judging, judge = threading.Event(), threading.Event()

    def hold_judge(function: str, _event: Any) -> None:
        if function == stack.resources["JudgeRunFunction"]:
            judging.set()
            judge.wait(30)

    runtime.listeners.append(hold_judge)
    try:
        started = scalelab("run", "--input", str(run_input), "--name", "later-1", "--no-follow", "--json")
        assert started.code == 0
        assert started.json()["run_id"] == "later-1"
        assert judging.wait(30)
        running = scalelab("status", "later-1", settled=False)
        assert running.code == 3
        assert "\nRUNNING the run is still running: Judge since " in running.out
    finally:
        judge.set()
        runtime.listeners.remove(hold_judge)

    assert scalelab("status", "later-1").code == 0  # settled first: it has finished

    unknown = scalelab("status", "nope")
    assert unknown.code == 2
    assert "no run 'nope' in stack 'scalelab'" in unknown.err
    assert "`scalelab runs` lists the recent runs" in unknown.err
    assert scalelab("report", "nope").code == 2
    arn = started.json()["execution_arn"].removesuffix("later-1") + "nope"
    assert scalelab("status", arn).code == 2

    again = scalelab("run", "--input", str(run_input), "--name", "later-1")
    assert again.code == 2
    assert "cannot start an execution named 'later-1': ExecutionAlreadyExists" in again.err

    missing = scalelab("runs", "--stack", "elsewhere")
    assert missing.code == 2
    assert "stack 'elsewhere' not found in us-east-1 at http://127.0.0.1:" in missing.err
    assert "sam build && sam deploy" in missing.err


def test_sweep_removes_what_a_run_left_and_prints_it(
    rehearsal: Rehearsal, scalelab: Any, run_input: Path
) -> None:
    emulator = rehearsal.emulator
    assert emulator.stack is not None
    assert emulator.runtime is not None
    with runs_leave_their_resources(emulator):
        left = scalelab("run", "--input", str(run_input), "--name", "left-1")
    # The lab passed, but what it created is still there: the run failed.
    assert left.code == 1
    assert "\nFAILED  passed: " in left.out
    assert "; but then the execution ended FAILED (TeardownFailed: teardown fails)" in left.out
    assert boto3.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]

    said = scalelab("sweep")

    assert said.code == 0, said.err
    assert said.out.startswith(f"Swept with {emulator.stack.outputs['JanitorFunctionName']}: removed ")
    assert "could not remove 0" in said.out
    assert "left-1" in said.out
    assert "auto_scaling_group" in said.out
    assert " \n" not in said.out  # no table padding at the ends of plain lines
    assert boto3.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert json.loads(scalelab("sweep", "--json").out)["removed"] == []


# ---- no emulator: the stack's name, and the live view --------------------------------------------


def test_samconfig_names_the_stack_and_its_region(tmp_path: Path) -> None:
    (tmp_path / "samconfig.toml").write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "lab-stack"\n'
        '[default.deploy.parameters]\nregion = "eu-west-1"\n'
    )

    config = operate.read_samconfig(tmp_path)

    assert (config.stack_name, config.region, config.profile) == ("lab-stack", "eu-west-1", None)


def test_a_samconfig_that_is_not_toml_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "samconfig.toml").write_text("[default.global.parameters\n")
    monkeypatch.chdir(tmp_path)

    code = cli.main(["runs"])

    err = capsys.readouterr().err
    assert code == 2
    assert f"scalelab runs: cannot read {tmp_path / 'samconfig.toml'}: " in err
    assert "--stack NAME" in err


def test_an_unreadable_input_file_exits_2_before_any_aws_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["run", "--input", str(tmp_path / "missing.json"), "--endpoint-url", "http://127.0.0.1:9"]
    )

    err = capsys.readouterr().err
    assert code == 2
    assert "argument --input: cannot read" in err
    assert "No such file or directory" in err


def test_the_live_view_draws_each_phase_with_its_state_and_the_ledger() -> None:
    stream = io.StringIO()
    view = operate.LiveFollow(Console(file=stream, force_terminal=True, width=100), "run-1")
    for event in NEVER_HEALTHY:
        view.on_event(event)
    view.on_record({"resources": {"load_balancer": "arn:lb", "target_group": "arn:tg"}})

    view.out.print(view.render())

    text = stream.getvalue()
    assert "Provision" in text
    assert "1 retried (AwsTransientError)" in text
    assert "TargetsNotHealthy" in text
    assert "Run run-1: 2 resources in the ledger" in text
