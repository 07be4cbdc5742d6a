"""The `scalelab` command: exit statuses and messages, the progress lines, the --json outcome."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scalelab_rehearsal import cli, rehearse
from scalelab_rehearsal.progress import LiveProgress, PhaseTracker, PlainProgress
from scalelab_rehearsal.world import SCENARIOS

from tests.workflow.conftest import Rehearsal

# ---- bad usage: exit 2, and a message that says what to do ------------------------------------------


def test_an_unknown_scenario_exits_2_and_lists_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["rehearse", "--scenario", "sunny"])

    err = capsys.readouterr().err
    assert code == 2
    assert "unknown scenario 'sunny'" in err
    for name in SCENARIOS:
        assert name in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"lab": {"max_size": 5,}}', "is not valid JSON (line 1, column 2"),
        ("{}\n{}", "is not valid JSON (line 2, column 1: Extra data)"),
        ("[1, 2]", "holds a JSON list, not an object"),
    ],
)
def test_input_that_is_not_a_json_object_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    given = tmp_path / "input.json"
    given.write_text(content)

    code = cli.main(["rehearse", "--input", str(given)])

    err = capsys.readouterr().err
    assert code == 2
    assert f"argument --input: {given} {message}" in err


def _nested(depth: int) -> str:
    """A run input whose lab name is ``depth`` arrays deep."""
    return '{"lab": {"name": ' + "[" * depth + "]" * depth + "}}"


# 100 000 deep overflows Python's JSON parser; 600 parses, but deep enough to overflow the
# interpreter and the handlers downstream.
@pytest.mark.parametrize("depth", [100_000, 600])
def test_deeply_nested_input_exits_2_before_anything_runs(
    depth: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = tmp_path / "input.json"
    given.write_text(_nested(depth))

    code = cli.main(["rehearse", "--input", str(given)])

    err = capsys.readouterr().err
    assert code == 2
    assert (
        f"argument --input: {given} nests arrays and objects more than {cli.MAX_INPUT_DEPTH} levels deep"
        in err
    )
    assert "Traceback" not in err


def test_deeply_nested_input_on_standard_input_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(_nested(100_000)))

    code = cli.main(["rehearse", "--input", "-"])

    err = capsys.readouterr().err
    assert code == 2
    assert f"argument --input: standard input nests arrays and objects more than {cli.MAX_INPUT_DEPTH}" in err


def test_input_as_deep_as_a_run_input_can_use_is_read(tmp_path: Path) -> None:
    given = tmp_path / "input.json"
    given.write_text(_nested(cli.MAX_INPUT_DEPTH - 2))  # the lab section and its object are two levels

    assert cli.build_parser().parse_args(["rehearse", "--input", str(given)]).input["lab"]["name"]


def test_an_unreadable_input_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["rehearse", "--input", str(tmp_path / "missing.json")])

    err = capsys.readouterr().err
    assert code == 2
    assert "cannot read" in err
    assert "No such file or directory" in err


@pytest.mark.parametrize("speed", ["0", "-3", "nan", "inf", "fast"])
def test_a_speed_that_is_not_a_positive_number_exits_2(
    speed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["rehearse", "--speed", speed])

    err = capsys.readouterr().err
    assert code == 2
    assert f"argument --speed: must be a positive number, not {speed!r}" in err


def test_no_command_exits_2_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([])

    assert code == 2
    assert "usage: scalelab" in capsys.readouterr().err


def test_rehearse_help_lists_the_scenarios_and_where_logs_go(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["rehearse", "--help"])

    out = capsys.readouterr().out
    assert code == 0
    for name, scenario in SCENARIOS.items():
        assert f"{name}  " in out
        assert scenario.description[:30] in out
    assert ".rehearsal/logs/<run id>.log" in out


def test_emulator_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code = cli.main(["emulator", "--port", str(port)])

    assert code == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_the_emulators_sweep_command_is_one_aws_cli_v1_and_v2_accept_and_it_sweeps(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    banner = cli._emulator_banner(rehearsal.emulator, "pass", 3600.0, tmp_path / "emulator.log")

    lines = banner.splitlines()
    invoke = next(index for index, line in enumerate(lines) if " lambda invoke " in line)
    command = " ".join(line.strip().rstrip("\\") for line in lines[invoke : invoke + 2]).split()
    # v1 knows no --cli-binary-format; v2 reads an inline --payload as base64 without it.
    assert "--cli-binary-format" not in banner
    payload = command[command.index("--payload") + 1]
    assert payload.startswith("fileb://")
    function = command[command.index("--function-name") + 1]
    answer = rehearsal.emulator.client("lambda").invoke(
        FunctionName=function, Payload=Path(payload.removeprefix("fileb://")).read_bytes()
    )
    swept = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, swept
    assert swept["could_not_remove"] == []


# ---- the progress, from synthetic history events (no emulator) ------------------------------------------

T0 = datetime(2026, 11, 25, 12, 0, 0).astimezone()


def entered(seconds: float, name: str, kind: str = "Task") -> dict[str, Any]:
    return {
        "type": f"{kind}StateEntered",
        "timestamp": T0 + timedelta(seconds=seconds),
        "stateEnteredEventDetails": {"name": name, "input": "{}"},
    }


def event(seconds: float, kind: str, **details: Any) -> dict[str, Any]:
    shaped: dict[str, Any] = {"type": kind, "timestamp": T0 + timedelta(seconds=seconds)}
    if details:
        shaped[kind[0].lower() + kind[1:] + "EventDetails"] = details
    return shaped


# A run whose Provision is retried once and whose targets never become healthy: the Catch goes to Judge.
NEVER_HEALTHY = [
    event(0.0, "ExecutionStarted"),
    entered(0.0, "Prepare"),
    event(0.1, "LambdaFunctionScheduled"),
    event(1.0, "LambdaFunctionSucceeded"),
    entered(1.0, "Provision"),
    event(1.1, "LambdaFunctionScheduled"),
    event(1.2, "LambdaFunctionFailed", error="AwsTransientError", cause="throttled"),
    event(1.5, "LambdaFunctionScheduled"),
    event(1.9, "LambdaFunctionSucceeded"),
    entered(2.0, "CheckHealthy"),
    event(2.1, "LambdaFunctionSucceeded"),
    entered(2.1, "Healthy?", "Choice"),
    entered(2.1, "WaitForHealthy", "Wait"),
    entered(3.1, "CheckHealthy"),
    event(3.2, "LambdaFunctionFailed", error="TargetsNotHealthy", cause="2 unhealthy"),
    entered(3.2, "Judge"),
    event(3.4, "LambdaFunctionSucceeded"),
    entered(3.4, "Teardown"),
    entered(3.6, "TeardownDone?", "Choice"),
    entered(3.6, "Notify"),
    event(3.7, "TaskSucceeded"),
    entered(3.7, "Outcome?", "Choice"),
    entered(3.7, "LabFailed", "Fail"),
    event(3.7, "ExecutionFailed", error="LabFailed", cause="failed at healthy"),
]


def test_plain_progress_writes_one_timed_line_per_phase_change() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream)

    for history_event in NEVER_HEALTHY:
        progress.on_event(history_event)

    assert stream.getvalue().splitlines() == [
        "12:00:00 Prepare started",
        "12:00:01 Prepare done in 1.0 s",
        "12:00:01 Provision started",
        "12:00:01 Provision retrying after AwsTransientError",
        "12:00:02 Provision done in 1.0 s",
        "12:00:02 Wait healthy started",
        "12:00:03 Wait healthy failed in 1.2 s (TargetsNotHealthy)",
        "12:00:03 Judge started",
        "12:00:03 Judge done in 0.2 s",
        "12:00:03 Teardown started",
        "12:00:03 Teardown done in 0.2 s",
        "12:00:03 Notify started",
        "12:00:03 Notify done in 0.1 s",
        "12:00:03 Execution failed after 3.7 s",
    ]


def test_plain_progress_begins_with_the_emulator_start() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream)

    progress.begin()
    progress.on_event({"type": "ExecutionStarted", "timestamp": datetime.now().astimezone()})

    first, second = stream.getvalue().splitlines()
    assert first.endswith(" Emulator starting (deploying the stack into moto)")
    assert " Emulator ready in " in second


def test_the_tracker_marks_phases_never_reached_as_skipped_and_times_the_others() -> None:
    tracker = PhaseTracker()

    for history_event in NEVER_HEALTHY:
        tracker.feed(history_event)

    statuses = {phase.spec.key: phase.status for phase in tracker.phases}
    assert statuses == {
        "prepare": "done",
        "provision": "done",
        "wait_healthy": "failed",
        "probe": "skipped",
        "stress": "skipped",
        "scale_out": "skipped",
        "new_instance_healthy": "skipped",
        "stop_stress": "skipped",
        "scale_in": "skipped",
        "judge": "done",
        "teardown": "done",
        "notify": "done",
    }
    timeline = tracker.timeline()
    assert [phase["name"] for phase in timeline] == [
        "prepare",
        "provision",
        "wait_healthy",
        "judge",
        "teardown",
        "notify",
    ]
    assert timeline[2]["seconds"] == 1.2


def test_a_failure_in_prepare_fails_the_phase_with_the_execution() -> None:
    tracker = PhaseTracker()

    for history_event in [
        event(0.0, "ExecutionStarted"),
        entered(0.0, "Prepare"),
        event(0.5, "LambdaFunctionFailed", error="InvalidInput", cause="lab.max_size"),
        event(0.5, "ExecutionFailed", error="InvalidInput", cause="lab.max_size"),
    ]:
        tracker.feed(history_event)

    assert tracker.phases[0].status == "failed"
    assert tracker.phases[0].error == "InvalidInput"
    assert tracker.outcome == "ExecutionFailed"


def test_live_progress_redraws_its_block_in_place_and_stops_its_clock() -> None:
    stream = io.StringIO()  # no encoding: the ASCII marks
    progress = LiveProgress(stream, colour=False, refresh_seconds=0.01)

    progress.begin()
    for history_event in NEVER_HEALTHY:
        progress.on_event(history_event)
    progress.end()

    output = stream.getvalue()
    block = len(progress.lines())
    assert block == 13  # the emulator's start, then the 12 phases
    assert f"\x1b[{block}F" in output  # back to the block's first line before each redraw
    assert output.startswith("\x1b[?25l")
    assert output.endswith("\x1b[?25h")
    final = [line.rstrip() for line in progress.lines()]
    assert final[2] == " + Provision                 1.0 s  1 retry (AwsTransientError)"
    assert final[3] == " x Wait healthy              1.2 s  TargetsNotHealthy"
    assert final[4] == " - Probe                            skipped"
    assert not [thread for thread in threading.enumerate() if thread.name == "scalelab-progress"]


# ---- real rehearsals, in this process ---------------------------------------------------------------


@pytest.fixture
def rehearsal_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Reports and logs of the rehearsals go to the test's own folder."""
    monkeypatch.setattr(rehearse, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(cli, "LOGS_DIR", tmp_path / "logs")
    return tmp_path


def test_json_prints_one_outcome_object_for_a_passing_rehearsal(
    rehearsal_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["rehearse", "--json"])

    captured = capsys.readouterr()
    outcome = json.loads(captured.out)
    assert code == 0
    assert {
        "status",
        "passed",
        "reason",
        "timeline",
        "report_path",
        "run_id",
        "seconds",
        "lambda_invocations",
        "state_transitions",
    } <= outcome.keys()
    assert outcome["status"] == "SUCCEEDED"
    assert outcome["passed"] is True
    assert outcome["reason"].startswith("passed: ")
    assert outcome["diagnosis"] == []
    assert [phase["name"] for phase in outcome["timeline"]] == [
        "provision",
        "wait_healthy",
        "stress_to_scale_out",
        "new_instance_healthy",
    ]
    assert outcome["state_transitions"] >= 17  # 17 when the targets are healthy at the first check
    assert outcome["lambda_invocations"] >= 11
    assert 0 < outcome["seconds"] < 60
    report = Path(outcome["report_path"])
    assert report.parent == rehearsal_files / "reports"
    assert json.loads(report.read_text())["verdict"]["run_id"] == outcome["run_id"]
    assert Path(outcome["log_path"]) == rehearsal_files / "logs" / f"{outcome['run_id']}.log"
    assert captured.err == ""
    # Modelled on AWS's clock: every phase that ran, the verdict's phases beside the rehearsal's.
    assert [phase["name"] for phase in outcome["aws"]["phases"]][-2:] == ["teardown", "notify"]
    assert all(phase["aws_seconds"] > 0 for phase in outcome["timeline"])
    assert outcome["aws"]["until_torn_down_seconds"] < 7 * 60


def test_the_rehearsal_says_how_long_the_run_would_take_on_aws(
    rehearsal_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["rehearse"])

    out = capsys.readouterr().out
    assert code == 0, out
    said = re.search(r"^on AWS this run would take about (\d+) min (\d+) s$", out, re.MULTILINE)
    assert said is not None, out
    report = json.loads(next((rehearsal_files / "reports").glob("*.json")).read_text())
    modelled = report["modelled_on_aws"]
    assert int(said[1]) * 60 + int(said[2]) == round(modelled["seconds"])
    assert int(said[1]) * 60 + int(said[2]) < 7 * 60 + 30  # what notify adds is small
    # The report's copy carries each phase's modelled time beside the rehearsal's, as the CLI shows it.
    for phase in report["verdict"]["timeline"]:
        assert phase["aws_seconds"] is not None
        minutes, seconds = divmod(round(phase["aws_seconds"]), 60)
        assert re.search(rf"^  {phase['name']} .* on AWS {minutes} min {seconds} s ", out, re.MULTILINE), out


def test_a_failed_verdict_exits_1_after_the_progress_and_the_reason(
    rehearsal_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["rehearse", "--scenario", "launch-fails"])

    out = capsys.readouterr().out
    assert code == 1
    assert " Scale-out failed in " in out
    assert "\nFAILED  failed at scale_out: " in out
    assert "Timeline (from the verdict):" in out
    assert "\nDiagnosis:\n  Unsuccessful launches (DescribeScalingActivities)\n" in out
    assert "Failed: We currently do not have sufficient t3.micro capacity" in out
    assert "Run id   " in out
    assert "Report   " in out


def test_input_the_workflow_rejects_exits_2_naming_the_fields(
    rehearsal_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = tmp_path / "input.json"
    given.write_text(json.dumps({"lab": {"min_size": 9, "max_size": 3}}))

    code = cli.main(["rehearse", "--input", str(given), "--json"])

    captured = capsys.readouterr()
    outcome = json.loads(captured.out)
    assert code == 2
    assert outcome["passed"] is False
    assert "InvalidInput" in outcome["reason"]
    assert "lab" in outcome["reason"]
    assert "the run input was rejected" in captured.err
    # No verdict: the timeline is the execution history's, each phase with its own modelled time.
    modelled = {phase["name"]: phase["aws_seconds"] for phase in outcome["aws"]["phases"]}
    assert [phase["name"] for phase in outcome["timeline"]] == ["prepare"]
    assert [phase["aws_seconds"] for phase in outcome["timeline"]] == [modelled["prepare"]]


def test_a_slower_world_clock_gives_the_same_verdict(
    rehearsal_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 15 #10: the deadlines did not follow the speed, so a healthy lab failed at low speeds.
    # At 12x the targets take about 8 s of real time to become healthy: past the old fixed 8 s.
    code = cli.main(["rehearse", "--speed", "12"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "\nPASSED  passed: " in out
