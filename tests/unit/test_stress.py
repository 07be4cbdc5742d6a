"""Stress: the SSM command reaches exactly this run's InService instances, and the script really stops.

moto records Run Command but runs nothing, and differs from AWS in ways the
fixtures below correct for the length of each test:
- SendCommand with InstanceIds and no Targets sends to every instance in the
  region (an empty Targets filter matches all); here it sends to the ids given.
- There is no CancelCommand; here it cancels a running command, leaves a
  finished one alone and rejects an unknown id with InvalidCommandId.
- Every command is finished (``Success``) the moment it is sent; ``still_running``
  marks one as running, as a real burn is for its whole duration.
- There is no ListCommandInvocations; the tests read GetCommandInvocation.
The script itself is run for real with bash, for a second at most.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ssm.models import ssm_backends
from scalelab_rehearsal import moto_fixes

from scalelab.contracts.base import parse_event
from scalelab.contracts.stress import StartStressEvent, StopStressEvent
from scalelab.core.errors import ForeignCommand, InvalidInput, NoInstancesInService
from scalelab.core.naming import RUN_TAG
from scalelab.steps.stress import (
    DURATION_TOKEN,
    command_comment,
    render_stress_script,
    start_stress,
    stop_stress,
)
from scalelab.store.runs import RunTable
from tests.conftest import REGION, FakeLambdaContext
from tests.support.account import aws_fault, run_group
from tests.unit.test_userdata import shellcheck

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "layers" / "scalelab" / "scalelab" / "assets"
RUN = "stress-0001"
GROUP = f"scalelab-{RUN}"
UNKNOWN_COMMAND = "0b5c1a2e-6f3d-4c8e-9a7b-1d2e3f4a5b6c"

# ---- the emulated account ----------------------------------------------------------


MakeGroup = Callable[..., list[str]]


@pytest.fixture
def make_group(account: None) -> MakeGroup:
    """An Auto Scaling group whose instances carry ``scalelab:run=<run_tag>``; returns their ids."""

    def make(name: str = GROUP, run_tag: str = RUN, desired: int = 2) -> list[str]:
        return run_group(name, run_tag, desired)

    return make


@pytest.fixture(autouse=True)
def _run_command_as_in_aws() -> Iterator[None]:
    """moto's Run Command corrected as the rehearsal corrects it (see scalelab_rehearsal.moto_fixes)."""
    undo = moto_fixes.install()
    yield
    undo()


@pytest.fixture
def still_running(account: None) -> Callable[[str], None]:
    """Mark a command as still running on its instances, as a real burn is for its whole duration."""

    def mark(command_id: str) -> None:
        command = ssm_backends[DEFAULT_ACCOUNT_ID][REGION].get_command_by_id(command_id)
        command.status = command.status_details = "InProgress"
        for invocation in command.invocations:
            invocation["Status"] = invocation["StatusDetails"] = "InProgress"

    return mark


def sent_commands() -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = boto3.client("ssm").list_commands()["Commands"]
    return commands


def command_status(command_id: str) -> str:
    status: str = boto3.client("ssm").list_commands(CommandId=command_id)["Commands"][0]["Status"]
    return status


def start(duration: int = 600, run_id: str = RUN, group: str = GROUP) -> Any:
    return start_stress(
        StartStressEvent(run_id=run_id, auto_scaling_group_name=group, duration_seconds=duration)
    )


# ---- start ---------------------------------------------------------------------------


def test_start_sends_one_command_to_exactly_the_groups_instances(make_group: MakeGroup) -> None:
    instances = make_group(desired=2)
    make_group(name="scalelab-bystander", run_tag="bystander")

    result = start(duration=600)

    assert result.instance_ids == instances
    assert result.duration_seconds == 600
    assert result.started_at.endswith("+00:00")
    (command,) = sent_commands()
    assert command["CommandId"] == result.command_id
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert sorted(command["InstanceIds"]) == instances
    assert command["Comment"] == command_comment(RUN)
    assert command["Parameters"]["executionTimeout"] == ["660"]
    script = "\n".join(command["Parameters"]["commands"])
    assert 'DURATION="600"' in script
    assert DURATION_TOKEN not in script
    ssm = boto3.client("ssm")
    for instance in instances:
        invocation = ssm.get_command_invocation(CommandId=result.command_id, InstanceId=instance)
        assert invocation["DocumentName"] == "AWS-RunShellScript"


def test_instances_of_another_run_in_the_group_are_skipped(make_group: MakeGroup) -> None:
    instances = make_group(desired=2)
    boto3.client("ec2").create_tags(Resources=[instances[0]], Tags=[{"Key": RUN_TAG, "Value": "other-run"}])

    result = start()

    assert result.instance_ids == [instances[1]]
    (command,) = sent_commands()
    assert command["InstanceIds"] == [instances[1]]


def test_a_group_whose_instances_belong_to_another_run_gets_no_command(make_group: MakeGroup) -> None:
    make_group(run_tag="other-run", desired=2)

    with pytest.raises(NoInstancesInService, match=f"{GROUP} has no InService instance tagged"):
        start()

    assert sent_commands() == []


def test_instances_not_in_service_are_not_stressed(make_group: MakeGroup) -> None:
    instances = make_group(desired=2)
    boto3.client("autoscaling").enter_standby(
        AutoScalingGroupName=GROUP, InstanceIds=[instances[0]], ShouldDecrementDesiredCapacity=True
    )

    result = start()

    assert result.instance_ids == [instances[1]]


def test_a_group_with_no_instances_gets_no_command(make_group: MakeGroup) -> None:
    make_group(desired=0)

    with pytest.raises(NoInstancesInService, match="check that the group exists"):
        start()

    assert sent_commands() == []


def test_a_group_that_does_not_exist_gets_no_command(account: None) -> None:
    with pytest.raises(NoInstancesInService, match="scalelab-never-made"):
        start(group="scalelab-never-made")

    assert sent_commands() == []


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (
            {"run_id": RUN, "auto_scaling_group_name": "prod-web", "duration_seconds": 600},
            "auto_scaling_group",
        ),
        ({"run_id": RUN, "auto_scaling_group_name": GROUP, "duration_seconds": 29}, "duration_seconds"),
        ({"run_id": RUN, "auto_scaling_group_name": GROUP, "duration_seconds": 86_401}, "duration_seconds"),
        ({"run_id": RUN, "auto_scaling_group_name": GROUP, "duration_seconds": "600"}, "duration_seconds"),
        ({"run_id": "Not A Run", "auto_scaling_group_name": GROUP, "duration_seconds": 600}, "run_id"),
    ],
)
def test_a_bad_start_event_is_rejected_naming_the_field(event: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        parse_event(event, StartStressEvent, "StartStress event")


# ---- stop ----------------------------------------------------------------------------


def test_stop_cancels_a_running_command(make_group: MakeGroup, still_running: Callable[[str], None]) -> None:
    make_group()
    command_id = start().command_id
    still_running(command_id)

    result = stop_stress(StopStressEvent(run_id=RUN, command_id=command_id))

    assert result.cancelled is True
    assert result.status in {"Cancelling", "Cancelled"}
    assert command_status(command_id) in {"Cancelling", "Cancelled"}


def test_stop_of_a_finished_command_is_harmless(
    make_group: MakeGroup, still_running: Callable[[str], None]
) -> None:
    make_group()
    command_id = start().command_id
    assert command_status(command_id) == "Success"

    result = stop_stress(StopStressEvent(run_id=RUN, command_id=command_id))

    assert result.cancelled is False
    assert result.status == "Success"
    assert command_status(command_id) == "Success"


def test_stop_of_an_unknown_command_is_harmless(still_running: Callable[[str], None]) -> None:
    result = stop_stress(StopStressEvent(run_id=RUN, command_id=UNKNOWN_COMMAND))

    assert result.model_dump() == {
        "command_id": UNKNOWN_COMMAND,
        "cancelled": False,
        "status": "NotFound",
        "load_execution_arn": None,
    }


def test_stop_of_a_command_that_vanishes_before_the_cancel_is_harmless(
    make_group: MakeGroup, still_running: Callable[[str], None]
) -> None:
    make_group()
    command_id = start().command_id
    still_running(command_id)

    with aws_fault("ssm", "CancelCommand", "InvalidCommandId"):
        result = stop_stress(StopStressEvent(run_id=RUN, command_id=command_id))

    assert result.cancelled is False
    assert result.status == "NotFound"


def test_stop_never_cancels_another_runs_command(
    make_group: MakeGroup, still_running: Callable[[str], None]
) -> None:
    make_group(name="scalelab-other-run", run_tag="other-run")
    theirs = start(run_id="other-run", group="scalelab-other-run").command_id
    still_running(theirs)

    with pytest.raises(ForeignCommand, match=f"not sent for run {RUN}"):
        stop_stress(StopStressEvent(run_id=RUN, command_id=theirs))

    assert command_status(theirs) == "InProgress"


# ---- the handlers, fed their sample events -------------------------------------------


@pytest.fixture
def start_app(load_handler: Callable[[str], ModuleType], run_table: RunTable) -> ModuleType:
    """The StartStress handler with its template environment (idempotency records go to the run table)."""
    return load_handler("StartStressFunction")


@pytest.fixture
def stop_app(load_handler: Callable[[str], ModuleType], run_table: RunTable) -> ModuleType:
    return load_handler("StopStressFunction")


def sample(step: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / f"{step}.json").read_text())
    return loaded


def test_the_start_sample_event_stresses_the_sample_runs_group(
    make_group: MakeGroup, start_app: ModuleType, lambda_context: FakeLambdaContext
) -> None:
    event = sample("start_stress")
    instances = make_group(name=event["auto_scaling_group_name"], run_tag=event["run_id"])

    result = start_app.lambda_handler(event, lambda_context)

    assert result["instance_ids"] == instances
    assert result["duration_seconds"] == event["duration_seconds"]
    assert [command["CommandId"] for command in sent_commands()] == [result["command_id"]]


def test_a_retried_start_returns_the_first_command_and_sends_no_second_burn(
    make_group: MakeGroup, start_app: ModuleType, lambda_context: FakeLambdaContext
) -> None:
    event = sample("start_stress")
    make_group(name=event["auto_scaling_group_name"], run_tag=event["run_id"])
    first = start_app.lambda_handler(event, lambda_context)

    again = start_app.lambda_handler(event, lambda_context)

    assert again == first
    assert [command["CommandId"] for command in sent_commands()] == [first["command_id"]]


def test_the_stop_sample_event_is_harmless_in_an_account_without_it(
    still_running: Callable[[str], None], stop_app: ModuleType, lambda_context: FakeLambdaContext
) -> None:
    event = sample("stop_stress")

    result = stop_app.lambda_handler(event, lambda_context)

    assert result == {
        "command_id": event["command_id"],
        "cancelled": False,
        "status": "NotFound",
        "load_execution_arn": None,
    }


# ---- the script, run for real ---------------------------------------------------------

TOOLS = ("sh", "timeout", "nproc", "date", "hostname")
DEADLINE_SECONDS = 10


def test_the_stress_script_template_passes_shellcheck() -> None:
    result = shellcheck(ASSETS / "stress.sh")

    assert result.returncode == 0, result.stdout


def test_the_rendered_script_passes_shellcheck_and_carries_the_duration(tmp_path: Path) -> None:
    rendered = tmp_path / "stress.sh"
    rendered.write_text(render_stress_script(600))

    result = shellcheck(rendered)

    assert result.returncode == 0, result.stdout
    assert 'DURATION="600"' in rendered.read_text()
    assert DURATION_TOKEN not in rendered.read_text()


@pytest.mark.parametrize("duration", [0, -1, True, 1.5])
def test_a_duration_that_is_not_whole_positive_seconds_is_not_rendered(duration: Any) -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        render_stress_script(duration)


def tool_dir(tmp_path: Path, stress_ng: str | None = None) -> Path:
    """A PATH holding only the tools the script needs, and a fake stress-ng when asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is not None:
            (bin_dir / tool).symlink_to(found)
    if stress_ng is not None:
        fake = bin_dir / "stress-ng"
        fake.write_text(stress_ng)
        fake.chmod(0o755)
    return bin_dir


def fake_stress_ng(record: Path, sleep_seconds: int) -> str:
    """A stand-in for stress-ng: writes down its arguments, then sleeps instead of burning."""
    return f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nexec {shutil.which("sleep")} {sleep_seconds}\n'


def group_members(group: int) -> dict[int, tuple[str, str]]:
    """Each live process of a process group (zombies waiting to be reaped do not count): its
    command name and its scheduler state."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members[int(stat.parent.name)] = (command, fields[0])
    return members


def live_members(group: int) -> list[int]:
    """Processes of a process group that are still alive."""
    return sorted(group_members(group))


def launch(script: Path, bin_dir: Path, output: Path) -> subprocess.Popen[bytes]:
    """Start the script as the SSM agent does: the leader of its own process group."""
    bash = shutil.which("bash")
    assert bash is not None
    with output.open("wb") as sink:
        return subprocess.Popen(
            [bash, str(script)],
            env={"PATH": str(bin_dir)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_to_the_end(script: Path, bin_dir: Path, output: Path) -> tuple[int, float, list[int]]:
    """Run the script until it exits by itself: its exit code, how long it took, what it left running."""
    began = time.monotonic()
    process = launch(script, bin_dir, output)
    try:
        code = process.wait(timeout=DEADLINE_SECONDS)
        return code, time.monotonic() - began, live_members(process.pid)
    finally:
        if live_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until(condition: Callable[[], bool], what: str, seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.02)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture
def one_second_script(tmp_path: Path) -> Path:
    script = tmp_path / "stress.sh"
    script.write_text(render_stress_script(1))
    return script


# A busy loop is runnable whenever it is looked at: on a core, or waiting for one on a loaded
# machine; a loop that sleeps is not. A share, not every look: a shell just started may be
# reading its program in from disk.
BUSY_SHARE = 0.8


def test_without_stress_ng_the_script_burns_the_cores_and_stops_by_itself(
    one_second_script: Path, tmp_path: Path
) -> None:
    output = tmp_path / "output.txt"
    cores = len(os.sched_getaffinity(0))
    cpu_before = children_cpu_seconds()
    # What each busy loop's shell was seen doing, by process id. The loops are judged by their
    # state, not by how much CPU they got: that depends on how loaded the machine is.
    seen: dict[int, list[str]] = {}

    began = time.monotonic()
    process = launch(one_second_script, tool_dir(tmp_path), output)
    try:
        while process.poll() is None and time.monotonic() - began < DEADLINE_SECONDS:
            for pid, (command, state) in group_members(process.pid).items():
                if command == "sh":
                    seen.setdefault(pid, []).append(state)
            time.sleep(0.01)
        code = process.wait(timeout=max(0.1, DEADLINE_SECONDS - (time.monotonic() - began)))
        elapsed = time.monotonic() - began
        left_running = live_members(process.pid)
    finally:
        if live_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    assert code == 0, output.read_text()
    assert elapsed < DEADLINE_SECONDS
    assert left_running == []
    assert "stress-ng not found; one shell busy loop per core" in output.read_text()
    assert "finished at" in output.read_text()
    # One loop per core, each busy (runnable) whenever it was looked at, and they did run.
    assert len(seen) == cores, seen
    busy = {pid: states.count("R") / len(states) for pid, states in seen.items()}
    assert all(share >= BUSY_SHARE for share in busy.values()), seen
    assert children_cpu_seconds() > cpu_before


def test_with_stress_ng_the_script_runs_it_for_the_duration(one_second_script: Path, tmp_path: Path) -> None:
    record = tmp_path / "stress-ng-arguments.txt"
    bin_dir = tool_dir(tmp_path, stress_ng=fake_stress_ng(record, sleep_seconds=1))
    output = tmp_path / "output.txt"

    code, elapsed, left_running = run_to_the_end(one_second_script, bin_dir, output)

    assert code == 0, output.read_text()
    assert elapsed < DEADLINE_SECONDS
    assert left_running == []
    assert "using stress-ng" in output.read_text()
    assert record.read_text().split() == ["--cpu", "0", "--cpu-load", "100", "--timeout", "1s"]


def test_a_stress_ng_that_overruns_is_stopped_by_timeout(one_second_script: Path, tmp_path: Path) -> None:
    record = tmp_path / "stress-ng-arguments.txt"
    bin_dir = tool_dir(tmp_path, stress_ng=fake_stress_ng(record, sleep_seconds=600))
    output = tmp_path / "output.txt"

    code, elapsed, left_running = run_to_the_end(one_second_script, bin_dir, output)

    assert code == 0, output.read_text()
    assert elapsed < DEADLINE_SECONDS
    assert left_running == []
    assert "stress-ng overran its own timeout; timeout stopped it" in output.read_text()


@pytest.mark.parametrize("with_stress_ng", [True, False], ids=["stress-ng", "shell-fallback"])
def test_killing_the_scripts_process_group_as_ssm_cancel_does_stops_everything(
    tmp_path: Path, with_stress_ng: bool
) -> None:
    script = tmp_path / "stress.sh"
    script.write_text(render_stress_script(30))
    record = tmp_path / "stress-ng-arguments.txt"
    bin_dir = tool_dir(tmp_path, stress_ng=fake_stress_ng(record, 30) if with_stress_ng else None)
    output = tmp_path / "output.txt"
    process = launch(script, bin_dir, output)
    try:
        wait_until(lambda: len(live_members(process.pid)) > 2, "the burn to start")

        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=DEADLINE_SECONDS)

        wait_until(lambda: not live_members(process.pid), "every process of the group to end")
    finally:
        if live_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
