"""The ``scalelab`` commands for a deployed stack: run, status, runs, report, sweep.

They act as the person running them, with their AWS credentials (AWS CLI
conventions: ``--region``, ``--profile``, ``--endpoint-url``), on the stack
that ``sam deploy`` made: its name comes from samconfig.toml or ``--stack``,
and its Outputs name the state machine, the run table, the reports bucket and
the janitor. Exit status: 0 when the run passed, 1 when it failed, 2 for bad
usage (an unknown run, an unreadable input, a stack that is not there), 3
while a run is still running (``status``), 130 when interrupted.

The run table's key schema (``RUN#<run id>`` / ``RUN`` for a run record) is
layers/scalelab/scalelab/store/table.py's; it is read here through the API, as
any client of the table would, since the rehearsal never imports the layer.
boto3 and rich are imported when a command runs, not when the command line is
parsed.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import tempfile
import threading
import time
import tomllib
import webbrowser
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scalelab_rehearsal import ROOT
from scalelab_rehearsal.progress import PhaseTracker, PlainProgress, seconds_text, tracked

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

PROG = "scalelab"
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SAMCONFIG = "samconfig.toml"
# The Outputs of template.yaml these commands use.
STATE_MACHINE_OUTPUT = "StateMachineArn"
RUN_TABLE_OUTPUT = "RunTableName"
JANITOR_OUTPUT = "JanitorFunctionName"
RUN_SK = "RUN"
ENDED_BADLY = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
TERMINAL_STATUSES = ENDED_BADLY | {"SUCCEEDED"}
DEFAULT_POLL_SECONDS = 2.0
RUNS_DEFAULT_LIMIT = 20
# Reports and executions of the listed runs are fetched this many at a time.
LOOKUP_THREADS = 8
# The width of tables written to a file or a pipe.
PLAIN_WIDTH = 200

EXIT_NOTE = (
    "Exit status: 0 when the run passed, 1 when it failed, 2 for bad usage (an unknown run, an "
    "unreadable input file, a stack that is not deployed), 3 while the run is still running."
)


class UsageError(Exception):
    """Something the person has to fix; the message says what is wrong and what to do."""


# ---- the deployed stack ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SamConfig:
    """What samconfig.toml says about the deployed stack (its default environment)."""

    path: Path | None
    stack_name: str | None = None
    region: str | None = None
    profile: str | None = None


def read_samconfig(directory: Path | None = None) -> SamConfig:
    """samconfig.toml of the working directory (as ``sam deploy`` reads it), else the project's."""
    for folder in (directory or Path.cwd(), ROOT):
        path = folder / SAMCONFIG
        if path.is_file():
            break
    else:
        return SamConfig(path=None)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(
            f"cannot read {path}: {error}; fix it, or name the stack with --stack NAME"
        ) from None
    default = document.get("default", {})
    # sam deploy --guided saves its answers under deploy; shared ones go under global.
    merged: dict[str, Any] = {}
    for command in ("global", "deploy"):
        section = default.get(command, {}).get("parameters", {})
        if isinstance(section, dict):
            merged.update(section)

    def text(name: str) -> str | None:
        value = merged.get(name)
        return value if isinstance(value, str) and value else None

    return SamConfig(path=path, stack_name=text("stack_name"), region=text("region"), profile=text("profile"))


class Account:
    """The person's AWS session, with the chosen region, profile and endpoint."""

    def __init__(self, region: str | None, profile: str | None, endpoint_url: str | None) -> None:
        import boto3  # noqa: PLC0415 - loaded when a command runs, not to parse the command line
        from botocore.config import Config  # noqa: PLC0415

        self.session = boto3.session.Session(profile_name=profile, region_name=region)
        self.endpoint_url = endpoint_url
        self._config = Config(retries={"mode": "standard", "max_attempts": 5})
        self._clients: dict[str, Any] = {}

    @property
    def region(self) -> str:
        return self.session.region_name or "(no region)"

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(  # type: ignore[call-overload]
                service, endpoint_url=self.endpoint_url, config=self._config
            )
        return self._clients[service]


@dataclass(frozen=True)
class Stack:
    name: str
    outputs: dict[str, str]
    account: Account

    def output(self, key: str) -> str:
        if key not in self.outputs:
            raise UsageError(
                f"stack {self.name!r} has no {key} output; it was deployed from an older template: "
                "run `sam build && sam deploy` to update it"
            )
        return self.outputs[key]

    @property
    def state_machine_arn(self) -> str:
        return self.output(STATE_MACHINE_OUTPUT)

    def execution_arn(self, execution_name: str) -> str:
        """The ARN of the lab state machine's execution of that name."""
        return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{execution_name}"


def open_stack(args: argparse.Namespace) -> Stack:
    config = read_samconfig()
    name = args.stack or config.stack_name
    if not name:
        where = f"{config.path} names none" if config.path else f"there is no {SAMCONFIG} here"
        raise UsageError(f"which stack? {where}; name it with --stack NAME (the stack `sam deploy` created)")
    account = Account(args.region or config.region, args.profile or config.profile, args.endpoint_url)
    try:
        found = account.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except Exception as error:
        if _error_code(error) == "ValidationError" and "does not exist" in str(error):
            raise UsageError(
                f"stack {name!r} not found in {account.region}{_endpoint_note(account)}; deploy it with "
                "`sam build && sam deploy`, or name the deployed stack with --stack NAME "
                "(and its region with --region)"
            ) from None
        raise
    outputs = {item["OutputKey"]: item["OutputValue"] for item in found[0].get("Outputs", [])}
    return Stack(name=name, outputs=outputs, account=account)


def _endpoint_note(account: Account) -> str:
    return f" at {account.endpoint_url}" if account.endpoint_url else ""


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _aws_problem(error: Exception) -> str | None:
    """A person's message for the AWS setup problems botocore raises; None for anything else."""
    from botocore import exceptions  # noqa: PLC0415

    hints: list[tuple[type[Exception] | tuple[type[Exception], ...], str]] = [
        (exceptions.NoRegionError, "give --region, set AWS_REGION, or choose one in your profile"),
        (exceptions.ProfileNotFound, "list the profiles with `aws configure list-profiles`"),
        (
            (exceptions.NoCredentialsError, exceptions.PartialCredentialsError),
            "configure credentials (`aws configure`, or --profile NAME)",
        ),
        (exceptions.EndpointConnectionError, "check --endpoint-url and --region"),
    ]
    for kind, hint in hints:
        if isinstance(error, kind):
            return f"{error}; {hint}"
    code = _error_code(error)
    if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"} or "Token" in code:
        return f"{error}; these commands act with your own credentials: use ones allowed to do this"
    return None


# ---- the run table and the runs -------------------------------------------------------------------


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

    deserializer = TypeDeserializer()
    values = {name: deserializer.deserialize(value) for name, value in item.items()}
    return {name: _number(value) for name, value in values.items()}


def _number(value: Any) -> Any:
    from decimal import Decimal  # noqa: PLC0415

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _number(inner) for key, inner in value.items()}
    return value


class Runs:
    """The run records of the stack's run table, and the executions and reports they point to."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.table = stack.output(RUN_TABLE_OUTPUT)
        self.ddb = stack.account.client("dynamodb")
        self.sfn = stack.account.client("stepfunctions")
        self.s3 = stack.account.client("s3")

    def record(self, run_id: str) -> dict[str, Any] | None:
        found = self.ddb.get_item(
            TableName=self.table,
            Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": RUN_SK}},
            ConsistentRead=True,
        )
        return _plain(found["Item"]) if "Item" in found else None

    def records(self, *, lab: str | None = None, execution_name: str | None = None) -> list[dict[str, Any]]:
        """Every run record (the table holds a few items per run, for RunRecordRetentionDays)."""
        condition, values = "sk = :sk", {":sk": {"S": RUN_SK}}
        if lab is not None:
            condition += " AND lab_name = :lab"
            values[":lab"] = {"S": lab}
        if execution_name is not None:
            condition += " AND execution_name = :name"
            values[":name"] = {"S": execution_name}
        pages = self.ddb.get_paginator("scan").paginate(
            TableName=self.table, FilterExpression=condition, ExpressionAttributeValues=values
        )
        return [_plain(item) for page in pages for item in page["Items"]]

    def describe(self, execution_arn: str) -> dict[str, Any] | None:
        try:
            description: dict[str, Any] = self.sfn.describe_execution(executionArn=execution_arn)
        except Exception as error:
            if _error_code(error) == "ExecutionDoesNotExist":
                return None
            raise
        return description

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        pages = self.sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        return [event for page in pages for event in page["events"]]

    def report(self, record: dict[str, Any], suffix: str = ".json") -> bytes | None:
        """The run's report object (``.html``: the HTML one next to it); None when there is none."""
        uri = record.get("report_uri")
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            return None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if suffix != ".json":
            key = key.removesuffix(".json") + suffix
        try:
            body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            if _error_code(error) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return body


@dataclass
class RunView:
    """One run as these commands show it: its record, its execution and its phases."""

    run_id: str
    execution_arn: str
    record: dict[str, Any] | None
    description: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def execution_status(self) -> str:
        return str(self.description["status"]) if self.description else "UNKNOWN"

    @property
    def running(self) -> bool:
        return self.execution_status == "RUNNING"

    @property
    def _recorded(self) -> str:
        return str((self.record or {}).get("status") or "")

    @property
    def _passed_but_ended_badly(self) -> bool:
        """The verdict passed, but the execution did not end well after it (a teardown that failed)."""
        return self._recorded == "passed" and self.execution_status in ENDED_BADLY

    @property
    def status(self) -> str:
        """passed, failed, rejected, running, or how the execution ended without a verdict."""
        recorded = self._recorded
        if self._passed_but_ended_badly:
            return "failed"
        if recorded in {"passed", "failed", "rejected"}:
            return recorded
        if self.running:
            return "running"
        return recorded if recorded and recorded != "prepared" else self.execution_status.lower()

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def rejected(self) -> bool:
        return self.status == "rejected" or (self.description or {}).get("error") == "InvalidInput"

    @property
    def reason(self) -> str:
        recorded = (self.record or {}).get("reason")
        if recorded and self.status != "running":
            if self._passed_but_ended_badly:
                return f"{recorded}; but then the execution ended {self._execution_end()}"
            return str(recorded)
        if self.running:
            phase = tracked(self.history).current
            where = (
                f": {phase.spec.label} since {_local(phase.started_at)}" if phase and phase.started_at else ""
            )
            return f"the run is still running{where}"
        return f"the execution ended {self._execution_end()} without a verdict"

    def _execution_end(self) -> str:
        """How the execution ended: its status, error and cause (a Lambda error's message)."""
        description = self.description or {}
        cause = str(description.get("cause") or "")
        try:
            parsed = json.loads(cause)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            cause = str(parsed["errorMessage"])
        error = description.get("error")
        return f"{self.execution_status} ({error}: {cause})" if error else self.execution_status

    @property
    def lab(self) -> str | None:
        lab = (self.record or {}).get("lab_name")
        return str(lab) if lab else None

    @property
    def report_uri(self) -> str | None:
        uri = (self.record or {}).get("report_uri")
        return str(uri) if uri else None

    @property
    def resources(self) -> dict[str, str]:
        """What the run's ledger still lists: created and not yet deleted."""
        resources = (self.record or {}).get("resources") or {}
        return {str(kind): str(value) for kind, value in resources.items()}

    @property
    def seconds(self) -> float | None:
        return _execution_seconds(self.description)

    def exit_code(self) -> int:
        if self.running:
            return EXIT_RUNNING
        return EXIT_PASSED if self.passed else EXIT_FAILED

    def as_json(self) -> dict[str, Any]:
        started = (self.description or {}).get("startDate")
        return {
            "run_id": self.run_id,
            "lab": self.lab,
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
            "execution_arn": self.execution_arn,
            "execution_status": self.execution_status,
            "started_at": _iso(started) if isinstance(started, datetime) else None,
            "seconds": round(self.seconds, 3) if self.seconds is not None else None,
            "phases": tracked(self.history).timeline(),
            "resources": self.resources,
            "torn_down_at": _iso_of_epoch((self.record or {}).get("torn_down_at")),
            "report_uri": self.report_uri,
        }


def _execution_seconds(description: dict[str, Any] | None) -> float | None:
    if not description or not isinstance(description.get("startDate"), datetime):
        return None
    started: datetime = description["startDate"]
    stopped = description.get("stopDate")
    end = stopped if isinstance(stopped, datetime) else datetime.now(UTC)
    return max(0.0, (end - started).total_seconds())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_of_epoch(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return _iso(datetime.fromtimestamp(seconds, UTC))


def _run_id_from_history(events: list[dict[str, Any]]) -> str | None:
    """The run id Prepare derived from the execution name, from Prepare's output."""
    for event in events:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == "Prepare":
            try:
                config = json.loads(details.get("output") or "{}").get("config", {})
            except ValueError:
                return None
            run_id = config.get("run_id") if isinstance(config, dict) else None
            return str(run_id) if run_id else None
    return None


def find_run(runs: Runs, run: str) -> RunView:
    """A run by its run id or its execution's ARN; UsageError when the stack knows neither."""
    if run.startswith("arn:"):
        description = runs.describe(run)
        if description is None:
            raise UsageError(
                f"no execution {run} in stack {runs.stack.name!r}; `{PROG} runs` lists the recent runs"
            )
        return _view_of_execution(runs, run, description)
    record = runs.record(run)
    if record is not None:
        name = record.get("execution_name")
        arn = runs.stack.execution_arn(str(name)) if name else ""
        description = runs.describe(arn) if arn else None
        return RunView(run, arn, record, description, runs.history(arn) if description else [])
    # No record: Prepare may not have run yet, and a lowercase execution name is its own run id.
    arn = runs.stack.execution_arn(run)
    description = runs.describe(arn)
    if description is None:
        raise UsageError(
            f"no run {run!r} in stack {runs.stack.name!r}: neither its run table nor its state machine "
            f"knows it; give a run id or an execution ARN (`{PROG} runs` lists the recent runs)"
        )
    return _view_of_execution(runs, arn, description)


def _view_of_execution(runs: Runs, arn: str, description: dict[str, Any]) -> RunView:
    events = runs.history(arn)
    name = arn.rsplit(":", 1)[-1]
    run_id = _run_id_from_history(events)
    record = runs.record(run_id) if run_id else None
    if record is None:
        matching = runs.records(execution_name=name)
        record = matching[0] if matching else None
    run_id = run_id or (str(record["run_id"]) if record and record.get("run_id") else name)
    return RunView(run_id, arn, record, description, events)


# ---- output ------------------------------------------------------------------------------------------


class _TrimmedLines:
    """A file or pipe without the spaces rich pads table cells with at the end of each line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(_PADDING.sub("\n", text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


_PADDING = re.compile(r" +\n")


def console(stream: TextIO) -> Console:
    """A rich console on ``stream``: colour and redraws on a terminal; plain lines otherwise, as wide
    as they need (a log or a pipe has no width to fit)."""
    from rich.console import Console  # noqa: PLC0415

    if stream.isatty():
        return Console(file=stream, highlight=False)
    return Console(file=_TrimmedLines(stream), highlight=False, soft_wrap=True, width=PLAIN_WIDTH)  # type: ignore[arg-type]


def _local(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _seconds_cell(seconds: float | None) -> str:
    return "" if seconds is None else seconds_text(seconds)


def print_run(view: RunView, out: Console, phases: bool = True) -> None:
    """The verdict and its reason, then where the run is: execution, resources, report, and its
    phases unless they were just shown live."""
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    styles = {"passed": "bold green", "running": "bold cyan"}
    out.print()
    # Aligned as `scalelab rehearse` prints it: "PASSED  reason".
    headline = Text(f"{view.status.upper():<7} ", style=styles.get(view.status, "bold red"))
    headline.append(f"{view.reason}", style="")
    out.print(headline)
    out.print()
    description = view.description or {}
    lines = [
        ("Run", f"{view.run_id}" + (f" (lab {view.lab})" if view.lab else "")),
        ("Execution", view.execution_arn or "(none)"),
        (
            "Status",
            f"{view.execution_status}"
            + (f", {seconds_text(view.seconds)}" if view.seconds is not None else "")
            + (f", started {_local(description.get('startDate'))}" if description else ""),
        ),
    ]
    resources = view.resources
    if resources:
        lines.append(("Resources", f"{len(resources)} still recorded in the ledger"))
    elif view.record and view.record.get("torn_down_at"):
        lines.append(("Resources", f"none left (torn down {_iso_of_epoch(view.record['torn_down_at'])})"))
    no_report = "none yet (Judge writes it)" if view.running else "none (the run ended without a verdict)"
    lines.append(("Report", view.report_uri or no_report))
    for label, value in lines:
        out.print(f"{label:<10} {value}")
    for kind, physical in sorted(resources.items()):
        out.print(f"  {kind:<24} {physical}")
    timeline = tracked(view.history).timeline() if phases else []
    if timeline:
        table = Table(title=None, box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("phase", "took", "from", "to", ""):
            table.add_column(column, justify="right" if column == "took" else "left")
        for phase in timeline:
            table.add_row(
                phase["name"],
                seconds_text(phase["seconds"]),
                _clock(phase["started_at"]),
                _clock(phase["ended_at"]),
                "" if phase["status"] == "done" else phase["status"],
            )
        out.print()
        out.print("Phases (from the execution history):")
        out.print(table)


def _clock(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return stamp


def _write_json(value: Any, stream: TextIO) -> None:
    stream.write(json.dumps(value, indent=2, default=str) + "\n")
    stream.flush()


# ---- following a run ---------------------------------------------------------------------------------


class PlainFollow:
    """One line per phase change (rehearse's plain view), and one when the run's ledger changes."""

    def __init__(self, stream: TextIO) -> None:
        self.progress = PlainProgress(stream)
        self.stream = stream
        self._ledger: int | None = None

    @contextmanager
    def shown(self) -> Iterator[PlainFollow]:
        yield self

    def on_event(self, event: dict[str, Any]) -> None:
        self.progress.on_event(event)

    def on_record(self, record: dict[str, Any] | None) -> None:
        if record is None:
            return
        count = len(record.get("resources") or {})
        if count != self._ledger:
            self._ledger = count
            at = datetime.now().astimezone().strftime("%H:%M:%S")
            self.stream.write(f"{at} Ledger: {count} resource{'' if count == 1 else 's'} recorded\n")
            self.stream.flush()


class LiveFollow:
    """The phases as a table redrawn in place by rich, with the running phase's clock and the ledger."""

    def __init__(self, out: Console, run_id: str) -> None:
        self.out = out
        self.run_id = run_id
        self.tracker = PhaseTracker()
        self.record: dict[str, Any] | None = None
        # rich redraws from its own thread while the poll feeds the tracker.
        self._lock = threading.Lock()

    @contextmanager
    def shown(self) -> Iterator[LiveFollow]:
        from rich.live import Live  # noqa: PLC0415

        with Live(get_renderable=self.render, console=self.out, refresh_per_second=8):
            yield self

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.tracker.feed(event)

    def on_record(self, record: dict[str, Any] | None) -> None:
        with self._lock:
            self.record = record

    def render(self) -> RenderableType:
        with self._lock:
            return self._render()

    def _render(self) -> RenderableType:
        from rich.console import Group  # noqa: PLC0415
        from rich.spinner import Spinner  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(width=2)
        table.add_column()
        table.add_column(justify="right")
        table.add_column()
        marks = {
            "pending": ("·", "dim"),
            "done": ("✓", "green"),
            "failed": ("✗", "red"),
            "skipped": ("-", "dim"),
        }
        now = datetime.now(UTC)
        for phase in self.tracker.phases:
            seconds = phase.seconds
            if phase.status == "running" and phase.started_at is not None:
                seconds = max(0.0, (now - phase.started_at).total_seconds())
            mark: Any = (
                Spinner("dots", style="cyan")
                if phase.status == "running"
                else Text(marks[phase.status][0], style=marks[phase.status][1])
            )
            notes = []
            if phase.retries:
                notes.append(f"{len(phase.retries)} retried ({', '.join(sorted(set(phase.retries)))})")
            if phase.status == "failed" and phase.error:
                notes.append(phase.error)
            table.add_row(mark, phase.spec.label, _seconds_cell(seconds), "; ".join(notes))
        ledger = len((self.record or {}).get("resources") or {})
        footer = Text(
            f"Run {self.run_id}: "
            + (
                f"{ledger} resource{'' if ledger == 1 else 's'} in the ledger"
                if self.record
                else "not recorded yet"
            ),
            style="dim",
        )
        return Group(table, footer)


def follow(
    runs: Runs,
    arn: str,
    view: PlainFollow | LiveFollow,
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> RunView:
    """Feed the execution's new history events and its run record to ``view`` until it ends."""
    seen = 0
    run_id: str | None = None
    while True:
        description = runs.describe(arn)
        if description is None:
            raise UsageError(f"the execution {arn} is gone")
        events = runs.history(arn)
        for event in events[seen:]:
            view.on_event(event)
        seen = len(events)
        run_id = run_id or _run_id_from_history(events)
        if run_id is not None:
            view.on_record(runs.record(run_id))
        if description["status"] in TERMINAL_STATUSES:
            return _view_of_execution(runs, arn, description)
        sleep(poll_seconds)


# ---- scalelab run ---------------------------------------------------------------------------------------


def run_input_of(args: argparse.Namespace) -> dict[str, Any]:
    """The input file's object (or {} for every default), with the flags laid over it."""
    run_input: dict[str, Any] = json.loads(json.dumps(args.input)) if args.input else {}
    overrides: dict[str, dict[str, Any]] = {
        "lab": {
            "name": args.lab,
            "instance_type": args.instance_type,
            "subnet_ids": args.subnet,
        },
        "stress": {"duration_seconds": args.stress_seconds},
    }
    for section, values in overrides.items():
        given = {name: value for name, value in values.items() if value is not None}
        if not given:
            continue
        current = run_input.get(section)
        if current is not None and not isinstance(current, dict):
            raise UsageError(f"the input's {section!r} is not an object; the flags set fields inside it")
        run_input[section] = {**(current or {}), **given}
    return run_input


def execution_name(given: str | None) -> str:
    # Lowercase letters, digits and hyphens: the run id is the execution name itself.
    return given or f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _run(args: argparse.Namespace, stack: Stack) -> int:
    out, err = sys.stdout, sys.stderr
    runs = Runs(stack)
    run_input = run_input_of(args)
    name = execution_name(args.name)
    try:
        arn: str = stack.account.client("stepfunctions").start_execution(
            stateMachineArn=stack.state_machine_arn, name=name, input=json.dumps(run_input)
        )["executionArn"]
    except Exception as error:
        code = _error_code(error)
        if code in {"ExecutionAlreadyExists", "InvalidName"}:
            raise UsageError(
                f"cannot start an execution named {name!r}: {code}; give another --name, or leave it out"
            ) from None
        raise
    if args.no_follow:
        if args.json:
            _write_json({"run_id": name, "execution_arn": arn}, out)
        else:
            out.write(
                f"Started {name}\n  execution  {arn}\n"
                f"Follow it with `{PROG} status {name}` (the run id is the execution name, "
                "as Prepare records it).\n"
            )
        return EXIT_PASSED
    shown = console(out)
    if not args.json:
        shown.print(f"Started {name} on stack {stack.name} ({stack.account.region})")
    view: PlainFollow | LiveFollow = (
        LiveFollow(shown, name) if shown.is_terminal and not args.json else PlainFollow(_sink(args, out))
    )
    try:
        with view.shown():
            result = follow(runs, arn, view, args.poll_seconds)
    except KeyboardInterrupt:
        err.write(
            f"{PROG} run: stopped following; the run goes on in AWS: `{PROG} status {name}` shows it, "
            f"`aws stepfunctions stop-execution --execution-arn {arn}` stops it (teardown follows)\n"
        )
        return EXIT_INTERRUPTED
    if args.json:
        _write_json(result.as_json(), out)
    else:
        print_run(result, shown, phases=False)
    if result.rejected:
        err.write(f"{PROG} run: the run input was rejected (the reason names the fields); fix them\n")
        return EXIT_USAGE
    return result.exit_code()


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _sink(args: argparse.Namespace, out: TextIO) -> Any:
    """Where the plain progress goes: nowhere with --json (one object is the whole output)."""
    return _Discard() if args.json else out


# ---- scalelab status, runs, report, sweep ---------------------------------------------------------


def _status(args: argparse.Namespace, stack: Stack) -> int:
    view = find_run(Runs(stack), args.run)
    if args.json:
        _write_json(view.as_json(), sys.stdout)
    else:
        print_run(view, console(sys.stdout))
    return view.exit_code()


def _phase_seconds(report: dict[str, Any] | None, name: str) -> float | None:
    for phase in ((report or {}).get("verdict") or {}).get("timeline") or []:
        if phase.get("name") == name:
            seconds: Any = phase.get("seconds")
            return float(seconds) if isinstance(seconds, int | float) else None
    return None


def _listed(runs: Runs, record: dict[str, Any]) -> dict[str, Any]:
    """One row of ``runs``: the record, its report's timings and its execution's length."""
    report_body = runs.report(record)
    report = json.loads(report_body) if report_body else None
    name = record.get("execution_name")
    arn = runs.stack.execution_arn(str(name)) if name else None
    description = runs.describe(arn) if arn else None
    view = RunView(str(record.get("run_id") or ""), arn or "", record, description)
    return {
        "run_id": view.run_id,
        "lab": view.lab,
        "started_at": _iso_of_epoch(record.get("started_at")),
        "status": view.status,
        "time_to_healthy_seconds": _phase_seconds(report, "wait_healthy"),
        "stress_to_scale_out_seconds": _phase_seconds(report, "stress_to_scale_out"),
        "total_seconds": _rounded(_execution_seconds(description)),
        "reason": view.reason,
        "report_uri": view.report_uri,
        "execution_arn": arn,
    }


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None


def _runs(args: argparse.Namespace, stack: Stack) -> int:
    runs = Runs(stack)
    records = sorted(runs.records(lab=args.lab), key=lambda item: item.get("started_at") or 0, reverse=True)
    chosen = records[: args.limit]
    with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
        rows = list(pool.map(lambda record: _listed(runs, record), chosen))
    if args.json:
        _write_json(rows, sys.stdout)
        return EXIT_PASSED
    out = console(sys.stdout)
    if not rows:
        lab = f" of lab {args.lab!r}" if args.lab else ""
        out.print(f"No runs{lab} in stack {stack.name}'s run table; start one with `{PROG} run`.")
        return EXIT_PASSED
    from rich.table import Table  # noqa: PLC0415

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("started", "run", "lab", "verdict", "to healthy", "stress to scale-out", "total"):
        table.add_column(
            column,
            justify="right" if column in {"to healthy", "stress to scale-out", "total"} else "left",
            no_wrap=True,
        )
    styles = {"passed": "green", "running": "cyan"}
    for row in rows:
        started = row["started_at"]
        table.add_row(
            _local(datetime.fromisoformat(started.replace("Z", "+00:00"))) if started else "",
            str(row["run_id"]),
            str(row["lab"] or ""),
            f"[{styles.get(row['status'], 'red')}]{row['status']}[/]",
            _seconds_cell(row["time_to_healthy_seconds"]),
            _seconds_cell(row["stress_to_scale_out_seconds"]),
            _seconds_cell(row["total_seconds"]),
        )
    out.print(table)
    if len(records) > len(rows):
        out.print(f"({len(records) - len(rows)} older runs not shown: --limit N shows more)")
    return EXIT_PASSED


def _report(args: argparse.Namespace, stack: Stack) -> int:
    runs = Runs(stack)
    view = find_run(runs, args.run)
    if view.record is None or not view.report_uri:
        state = "it is still running" if view.running else f"it ended {view.status}: {view.reason}"
        raise UsageError(f"run {view.run_id} has no report: Judge writes one, and {state}")
    body = runs.report(view.record)
    if body is None:
        raise UsageError(f"run {view.run_id}'s report {view.report_uri} is gone (the bucket's retention?)")
    if args.html is not None or args.open:
        html = runs.report(view.record, ".html")
        html_uri = view.report_uri.removesuffix(".json") + ".html"
        if html is None:
            raise UsageError(
                f"run {view.run_id} has no HTML report ({html_uri} does not exist: PublishReport writes it "
                f"after Teardown, and did not); `{PROG} report {args.run}` prints the JSON report's verdict"
            )
        path = args.html or Path(tempfile.gettempdir()) / f"scalelab-{view.run_id}.html"
        path.write_bytes(html)
        sys.stderr.write(f"Wrote {html_uri} to {path}\n")
        if args.open:
            webbrowser.open(path.resolve().as_uri())
    report = json.loads(body)
    if args.json:
        _write_json(report, sys.stdout)
    elif args.html is None and not args.open:
        _print_report(report, view, console(sys.stdout))
    return EXIT_PASSED if view.passed else EXIT_FAILED


def _print_report(report: dict[str, Any], view: RunView, out: Console) -> None:
    from rich.table import Table  # noqa: PLC0415

    verdict = report.get("verdict") or {}
    out.print(f"{'PASSED' if verdict.get('passed') else 'FAILED':<8}{verdict.get('reason', '')}")
    out.print()
    out.print(
        f"Run      {verdict.get('run_id', view.run_id)} (lab {view.lab or '?'}), "
        f"judged {verdict.get('judged_at', '')}"
    )
    out.print(f"Report   {view.report_uri}")
    checks = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("check", "", "detail"):
        checks.add_column(column)
    for check in verdict.get("checks") or []:
        checks.add_row(
            check.get("name", ""), "ok" if check.get("passed") else "FAILED", check.get("detail", "")
        )
    out.print()
    out.print(checks)
    timeline = verdict.get("timeline") or []
    if timeline:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("phase", "took", "from", "to"):
            table.add_column(column, justify="right" if column == "took" else "left")
        for phase in timeline:
            table.add_row(
                phase.get("name", ""),
                seconds_text(float(phase.get("seconds", 0))),
                _clock(str(phase.get("started_at", ""))),
                _clock(str(phase.get("ended_at", ""))),
            )
        out.print()
        out.print("Timeline (from the verdict):")
        out.print(table)


def _sweep(args: argparse.Namespace, stack: Stack) -> int:
    function = stack.output(JANITOR_OUTPUT)
    answer = stack.account.client("lambda").invoke(
        FunctionName=function, Payload=json.dumps({"action": "sweep"}).encode()
    )
    payload = answer["Payload"].read()
    try:
        result = json.loads(payload)
    except ValueError:
        result = {"errorMessage": payload.decode(errors="replace")}
    if "FunctionError" in answer:
        message = result.get("errorMessage", result) if isinstance(result, dict) else result
        sys.stderr.write(
            f"{PROG} sweep: the janitor {function} failed: {message}; its log group "
            f"/aws/lambda/{function} has the details\n"
        )
        return EXIT_FAILED
    if args.json:
        _write_json(result, sys.stdout)
    else:
        _print_sweep(result, function, console(sys.stdout))
    return EXIT_FAILED if result.get("could_not_remove") else EXIT_PASSED


def _print_sweep(result: dict[str, Any], function: str, out: Console) -> None:
    from rich.table import Table  # noqa: PLC0415

    removed = result.get("removed") or []
    problems = result.get("could_not_remove") or []
    out.print(f"Swept with {function}: removed {len(removed)}, could not remove {len(problems)}")
    if removed:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("run", "kind", "id"):
            table.add_column(column, no_wrap=column != "id")
        for item in removed:
            resource = item.get("resource") or {}
            table.add_row(
                str(item.get("run_id", "")), str(resource.get("kind", "")), str(resource.get("id", ""))
            )
        out.print(table)
    for problem in problems:
        resource = problem.get("resource") or {}
        what = f"{resource.get('kind')} {resource.get('id')}" if resource else "its ledger"
        out.print(f"  could not remove {what} of run {problem.get('run_id')}: {problem.get('reason')}")
    released = result.get("locks_released") or []
    if released:
        out.print(f"Locks released: {', '.join(released)}")
    skipped = result.get("skipped") or []
    if skipped:
        out.print(f"Left alone (still running, or within the grace period): {', '.join(skipped)}")


# ---- the parser ----------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 up, not {text!r}")
    return value


def _common() -> argparse.ArgumentParser:
    """The AWS CLI's options, and --stack and --json, shared by every deployed-stack command."""
    common = argparse.ArgumentParser(add_help=False)
    aws = common.add_argument_group("AWS")
    aws.add_argument(
        "--stack", metavar="NAME", help=f"the deployed stack (default: stack_name in {SAMCONFIG})"
    )
    aws.add_argument(
        "--region", metavar="REGION", help=f"AWS region (default: {SAMCONFIG}'s, else your profile's)"
    )
    aws.add_argument("--profile", metavar="NAME", help="a profile of your AWS configuration")
    aws.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="send every AWS call here (for example `scalelab emulator`'s endpoint)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object (or array) for scripts")
    return common


def add_commands(
    commands: Any, formatter_class: type[argparse.HelpFormatter], run_input: Callable[[str], dict[str, Any]]
) -> None:
    """Register run, status, runs, report and sweep on the ``scalelab`` command's subparsers."""
    common = _common()

    def command(name: str, help_text: str, description: str, handler: Callable[..., int]) -> Any:
        parser = commands.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=EXIT_NOTE,
            parents=[common],
            formatter_class=formatter_class,
        )
        parser.set_defaults(handler=lambda args: handle(name, handler, args))
        return parser

    run = command(
        "run",
        "start a lab run on the deployed stack and follow it to its verdict",
        "Start the deployed stack's state machine (its StateMachineArn output) with a run input, follow "
        "the run live with the same phases as `scalelab rehearse` (from the execution history and the "
        "run record), then print the verdict, its reason and the report's S3 URI. A run takes about "
        "ten minutes with the template's defaults.",
        _run,
    )
    run.add_argument(
        "--input",
        type=run_input,
        metavar="FILE",
        help="the run input, a JSON object ('-' reads stdin; events/start-execution.json is a complete "
        "example); fields it leaves out take the template's defaults",
    )
    run.add_argument("--lab", metavar="NAME", help="lab.name, laid over --input")
    run.add_argument("--instance-type", metavar="TYPE", help="lab.instance_type, laid over --input")
    run.add_argument(
        "--subnet",
        action="append",
        metavar="ID",
        help="lab.subnet_ids, laid over --input (repeat it: two or more subnets in different zones)",
    )
    run.add_argument(
        "--stress-seconds", type=int, metavar="N", help="stress.duration_seconds, laid over --input"
    )
    run.add_argument(
        "--name",
        metavar="NAME",
        help="the execution's name (default: run-<UTC time>-<4 hex digits>); it becomes the run id",
    )
    run.add_argument("--no-follow", action="store_true", help="start the run, print its id and return")
    run.add_argument(
        "--poll-seconds",
        type=_positive,
        default=DEFAULT_POLL_SECONDS,
        metavar="N",
        help=f"how often to read the execution's history and run record (default: {DEFAULT_POLL_SECONDS:g})",
    )

    status = command(
        "status",
        "show one run: verdict, reason, phases, resources left, report",
        "Show one run of the deployed stack: its verdict and reason (or that it is still running), its "
        "execution, its phases from the execution history, what its ledger still lists and its report.",
        _status,
    )
    status.add_argument(
        "run", metavar="RUN", help="a run id (`scalelab runs` lists them) or an execution ARN"
    )

    listing = command(
        "runs",
        "list recent runs from the run table",
        "List the stack's recent runs, newest first, from its run table: start time, lab, verdict, time "
        "to healthy and stress to scale-out (from each run's report), and the execution's total time.",
        _runs,
    )
    listing.add_argument("--lab", metavar="NAME", help="only this lab's runs")
    listing.add_argument(
        "--limit",
        type=_limit,
        default=RUNS_DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N runs (default: {RUNS_DEFAULT_LIMIT})",
    )

    report = command(
        "report",
        "print a run's report, or write its HTML report",
        "Fetch a run's report from the reports bucket: print its verdict, checks and timeline (--json: the "
        "report as stored), or write the HTML report stored next to it after Teardown (--html FILE) and "
        "open it in a browser (--open).",
        _report,
    )
    report.add_argument("run", metavar="RUN", help="a run id or an execution ARN")
    report.add_argument("--html", type=Path, metavar="FILE", help="write the run's HTML report to FILE")
    report.add_argument(
        "--open",
        action="store_true",
        help="open the HTML report in a browser (written to a temporary file without --html)",
    )

    command(
        "sweep",
        "run the janitor now and print what it removed",
        'Invoke the stack\'s janitor (its JanitorFunctionName output) with {"action": "sweep"}, as its '
        "hourly schedule does: it removes what ended runs left behind and releases their labs' locks. "
        "Exits 1 when something could not be removed.",
        _sweep,
    )


def handle(
    command: str, handler: Callable[[argparse.Namespace, Stack], int], args: argparse.Namespace
) -> int:
    """Open the stack and run the command; usage and AWS setup problems become a message and exit 2."""
    try:
        return handler(args, open_stack(args))
    except UsageError as error:
        sys.stderr.write(f"{PROG} {command}: {error}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {command}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        if not isinstance(error, BotoCoreError | ClientError):
            raise
        problem = _aws_problem(error)
        if problem is not None:
            sys.stderr.write(f"{PROG} {command}: {problem}\n")
            return EXIT_USAGE
        sys.stderr.write(f"{PROG} {command}: AWS answered with an error: {error}\n")
        return EXIT_FAILED
