"""The ``scalelab`` command: rehearse a lab run offline, or keep an emulated account running.

Exit status of ``scalelab rehearse``: 0 when the verdict passed, 1 when it
failed (or the run ended without one), 2 for bad usage or a broken setup.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import logging
import math
import os
import signal
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

from scalelab_rehearsal import ROOT, operate
from scalelab_rehearsal.aws_time import minutes_text, verdict_phase_seconds
from scalelab_rehearsal.iam.enforce import iam_summary
from scalelab_rehearsal.progress import LiveProgress, PlainProgress, Progress, seconds_text, tracked

try:
    from scalelab_rehearsal import rehearse as rehearsal
    from scalelab_rehearsal.emulator import REGION, Emulator
    from scalelab_rehearsal.rehearse import Outcome, state_transitions
    from scalelab_rehearsal.world import DEFAULT_SPEED, SCENARIOS, World, scenario_named
except ImportError as error:  # a broken setup: every command says so and exits 2
    BROKEN_SETUP: ImportError | None = error
else:
    BROKEN_SETUP = None

PROG = "scalelab"
LOGS_DIR = ROOT / ".rehearsal" / "logs"
START_INPUT = ROOT / "events" / "start-execution.json"
SWEEP_EVENT = ROOT / "events" / "janitor.json"
LOG = logging.getLogger("scalelab.rehearsal.cli")

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# A run input is an object of sections of fields, a few levels deep; far deeper input overflows
# Python's JSON parser (about 1000 levels), and Step Functions' interpreter and the handlers
# before that, so it is refused here with a message instead of a traceback.
MAX_INPUT_DEPTH = 32

SETUP_HINT = "the rehearsal needs the project's pinned dependencies in .venv: run `make setup`"
OUTPUT_NOTE = (
    "The functions' own output (Powertools JSON logs and EMF metrics, what Lambda would send "
    "to CloudWatch Logs) and the emulator's warnings are written to .rehearsal/logs/<run id>.log, "
    "not to the terminal; moto's request log is off. The report is .rehearsal/reports/<run id>.json."
)


# ---- the run's log: everything but the CLI's own output ------------------------------------------


class _RunLog(io.TextIOBase):
    """A stream that writes to the current rehearsal's log file.

    It stands in for stdout while a rehearsal runs; whatever binds to it then
    (Powertools' handler binds to stdout at its first cold start) keeps writing
    to the latest log, late threads included, and never to the CLI's output.
    """

    def __init__(self) -> None:
        super().__init__()
        self._file: TextIO | None = None
        self._lock = threading.Lock()
        self.path: Path | None = None

    def open_at(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = path.open("a", encoding="utf-8")
            self.path = path

    def move_to(self, path: Path) -> None:
        with self._lock:
            if self.path is not None and self.path != path and self.path.exists():
                self.path = self.path.replace(path)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self._file is not None:
                self._file.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close_file(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


_RUN_LOG = _RunLog()
atexit.register(_RUN_LOG.close_file)


@contextmanager
def _output_to_run_log(path: Path) -> Iterator[Path]:
    """Send stdout and Python logging to the run's log; turn off werkzeug's request lines."""
    _RUN_LOG.open_at(path)
    handler = logging.StreamHandler(_RUN_LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    werkzeug = logging.getLogger("werkzeug")
    saved_level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        with redirect_stdout(cast(TextIO, _RUN_LOG)):
            yield path
    finally:
        root.removeHandler(handler)
        werkzeug.setLevel(saved_level)
        _RUN_LOG.flush()


# ---- argument types: each says what is wrong and what to give instead ------------------------------


def _scenario(name: str) -> str:
    try:
        scenario: str = scenario_named(name).name
    except ValueError as error:  # UnknownScenario
        raise argparse.ArgumentTypeError(f"{error} (`{PROG} rehearse --help` says what each does)") from None
    return scenario


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number, not {text!r}: how many times faster than real time "
            "the simulated world's clock runs"
        )
    return value


def _run_input(text: str) -> dict[str, Any]:
    source = "standard input" if text == "-" else text
    try:
        raw = sys.stdin.read() if text == "-" else Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise argparse.ArgumentTypeError(
            f"cannot read {source}: {reason}; give a JSON file, for example events/start-execution.json"
        ) from None
    too_deep = argparse.ArgumentTypeError(
        f"{source} nests arrays and objects more than {MAX_INPUT_DEPTH} levels deep; a run input is an "
        'object of sections of fields, such as {"lab": {"subnet_ids": ["subnet-0abc"]}}'
    )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"{source} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "it must hold one JSON object, laid over the rehearsal's input section by section"
        ) from None
    except RecursionError:  # deeper than the parser can follow
        raise too_deep from None
    if _depth(value) > MAX_INPUT_DEPTH:
        raise too_deep
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{source} holds a JSON {type(value).__name__}, not an object; give an object such as "
            '{"lab": {"max_size": 5}}'
        )
    return value


def _depth(value: Any) -> int:
    """How many arrays and objects deep ``value`` nests, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            pending.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, not {text!r}")
    return value


# ---- the parser ------------------------------------------------------------------------------------


def _scenarios_help() -> str:
    width = max(len(name) for name in SCENARIOS)
    listing = "\n".join(f"  {name:<{width}}  {scenario.description}" for name, scenario in SCENARIOS.items())
    return f"scenarios:\n{listing}"


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description or epilog; keeps a list (a line ending in ':') as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.splitlines()[0].endswith(":"):
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(
                    textwrap.fill(
                        " ".join(paragraph.split()),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
        return "\n\n".join(paragraphs)


def build_parser() -> argparse.ArgumentParser:
    scenarios = _scenarios_help()
    speed_default = f"{DEFAULT_SPEED:g}"
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_HelpFormatter,
        description="scalelab's offline rehearsal: the real state machine and handlers on emulated AWS "
        "(moto, on 127.0.0.1), no AWS account needed; and the commands for the stack `sam deploy` made "
        "(run, status, runs, report, sweep), with your AWS credentials.",
    )
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    rehearse = commands.add_parser(
        "rehearse",
        help="run one lab end to end on emulated AWS and print its verdict",
        description="Run one lab end to end on emulated AWS: the real template deployed into moto, the "
        "real Step Functions state machine and Lambda handlers, and a simulated world (health checks, "
        "CPU, scaling, Auto Scaling events) on a compressed clock. Shows the workflow's phases as they "
        "run, then the verdict, the timeline, the run id and the report's path. Exit status: 0 when "
        "the verdict passed, 1 when it failed, 2 for bad usage or a broken setup.",
        epilog=f"{scenarios}\n\n{OUTPUT_NOTE}",
        formatter_class=_HelpFormatter,
    )
    rehearse.add_argument(
        "--scenario",
        type=_scenario,
        default="pass",
        metavar="NAME",
        help="how the world behaves (default: pass)",
    )
    rehearse.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="N",
        help=f"the simulated clock runs N times faster than real time (default: {speed_default})",
    )
    rehearse.add_argument(
        "--input",
        type=_run_input,
        default=None,
        metavar="FILE",
        help="a JSON object laid over the rehearsal's run input, section by section ('-' reads stdin); "
        "its timings are real seconds, where the rehearsal's own are short",
    )
    rehearse.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the outcome instead of progress and text",
    )
    rehearse.set_defaults(handler=_rehearse)

    emulator = commands.add_parser(
        "emulator",
        help="keep an emulated account with the stack deployed running, for the aws CLI",
        description="Start emulated AWS on 127.0.0.1 with the scalelab stack deployed and the simulated "
        "world running, print its endpoint, the state machine's ARN and an aws CLI command that starts "
        "a run, and keep it up until Ctrl-C. Region us-east-1; any credentials are accepted.",
        formatter_class=_HelpFormatter,
    )
    emulator.add_argument(
        "--port", type=_port, default=None, metavar="N", help="port on 127.0.0.1 (default: a free one)"
    )
    emulator.add_argument(
        "--scenario",
        type=_scenario,
        default="pass",
        metavar="NAME",
        help="how the world behaves (default: pass)",
    )
    emulator.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="N",
        help=f"world clock speed (default: {speed_default})",
    )
    emulator.set_defaults(handler=_emulator)
    operate.add_commands(commands, _HelpFormatter, _run_input)
    return parser


def main(argv: list[str] | None = None) -> int:
    if BROKEN_SETUP is not None:
        sys.stderr.write(f"{PROG}: the rehearsal cannot be loaded ({BROKEN_SETUP}); {SETUP_HINT}\n")
        return EXIT_USAGE
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (2) and --help (0)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    code: int = args.handler(args)
    return code


# ---- scalelab rehearse -----------------------------------------------------------------------------


def _progress_for(stream: TextIO) -> Progress:
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveProgress(stream, colour="NO_COLOR" not in os.environ)
    return PlainProgress(stream)


def _rehearse(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    log_path = LOGS_DIR / f"rehearsal-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}.log"
    progress = None if args.json else _progress_for(out)
    started: list[str] = []  # the execution's ARN, once the emulated account has started it
    with _output_to_run_log(log_path):
        if progress is not None:
            progress.begin()
        try:
            outcome = rehearsal.rehearse(
                scenario=args.scenario,
                speed=args.speed,
                run_input=args.input,
                on_event=None if progress is None else progress.on_event,
                on_start=started.append,
            )
        except KeyboardInterrupt:
            err.write(f"{PROG} rehearse: interrupted; the emulator was stopped\n")
            return EXIT_INTERRUPTED
        except Exception as error:  # reported with its traceback in the log, and turned into an exit status
            LOG.exception("the rehearsal stopped")
            return _broken(error, bool(started), log_path, err)
        finally:
            if progress is not None:
                progress.end()
    final_log = LOGS_DIR / f"{outcome.run_id}.log"
    _RUN_LOG.move_to(final_log)
    summary = _summary(outcome, args, final_log)
    if args.json:
        out.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_summary(summary, out)
    if outcome.passed:
        return EXIT_PASSED
    if outcome.verdict is None and outcome.error == "InvalidInput":
        err.write(
            f"{PROG} rehearse: the run input was rejected (the reason names the fields); "
            "fix them in --input FILE\n"
        )
        return EXIT_USAGE
    return EXIT_FAILED


def _broken(error: Exception, started: bool, log_path: Path, err: TextIO) -> int:
    where = _shown(log_path)
    if not started:
        err.write(
            f"{PROG} rehearse: the emulated account did not start: {type(error).__name__}: {error}\n"
            f"  the traceback is in {where}; {SETUP_HINT}\n"
        )
        return EXIT_USAGE
    if isinstance(error, TimeoutError):
        err.write(f"{PROG} rehearse: no verdict: {error}; the functions' logs are in {where}\n")
    else:
        err.write(
            f"{PROG} rehearse: the rehearsal stopped before a verdict: {type(error).__name__}: {error}\n"
            f"  the traceback is in {where}\n"
        )
    return EXIT_FAILED


def _reason(outcome: Outcome) -> str:
    if outcome.verdict is not None:
        return str(outcome.verdict.get("reason", ""))
    cause = outcome.cause or ""
    try:
        parsed = json.loads(cause)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        cause = str(parsed["errorMessage"])
    what = f"the execution ended {outcome.status} without a verdict"
    return f"{what}: {outcome.error}: {cause}" if outcome.error else what


def _summary(outcome: Outcome, args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    verdict_timeline = (outcome.verdict or {}).get("timeline")
    timeline = verdict_timeline if verdict_timeline else tracked(outcome.history).timeline()
    if outcome.aws is not None:
        # Beside each phase's rehearsal time, its time modelled on AWS (aws_time).
        modelled = {phase["name"]: phase["aws_seconds"] for phase in outcome.aws["phases"]}
        timeline = [
            {
                **phase,
                "aws_seconds": verdict_phase_seconds(phase["name"], outcome.aws)
                if verdict_timeline
                else modelled.get(phase["name"]),
            }
            for phase in timeline
        ]
    return {
        "status": outcome.status,
        "passed": outcome.passed,
        "reason": _reason(outcome),
        # What Judge read about the failure: [{"title": ..., "lines": [...]}], empty when it passed.
        "diagnosis": (outcome.verdict or {}).get("diagnosis", []),
        "timeline": timeline,
        "timeline_source": "verdict" if verdict_timeline else "history",
        "report_path": str(outcome.report_path) if outcome.report_path else None,
        "page_path": str(outcome.page_path) if outcome.page_path else None,
        "run_id": outcome.run_id,
        "seconds": round(outcome.seconds, 3),
        "lambda_invocations": outcome.lambda_invocations,
        "state_transitions": state_transitions(outcome.history),
        "scenario": args.scenario,
        "execution_arn": outcome.execution_arn,
        "log_path": str(log_path),
        "skipped_resource_types": outcome.skipped_types,
        "iam": iam_summary(outcome.iam_calls, outcome.iam_deliveries),
        "aws": outcome.aws,
    }


def _shown(path: Path | str | None) -> str:
    """A path as a person would type it from here: relative when it is under the working directory."""
    if path is None:
        return "(none)"
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def _print_summary(summary: dict[str, Any], out: TextIO) -> None:
    verdict = "PASSED" if summary["passed"] else "FAILED"
    lines = ["", f"{verdict}  {summary['reason']}", ""]
    source = "the verdict" if summary["timeline_source"] == "verdict" else "the execution history"
    lines.append(f"Timeline (from {source}):")
    if not summary["timeline"]:
        lines.append("  (no phase completed)")
    width = max((len(phase["name"]) for phase in summary["timeline"]), default=0)
    for phase in summary["timeline"]:
        span = f"{_clock_of(phase['started_at'])} to {_clock_of(phase['ended_at'])}"
        lines.append(
            f"  {phase['name']:<{width}}  {_phase_seconds(phase['seconds']):>9}{_aws_column(phase)}  {span}"
        )
    if summary.get("aws") is not None:
        lines += ["", f"{AWS_LINE} {minutes_text(summary['aws']['seconds'])}"]
    if summary["diagnosis"]:
        lines += ["", "Diagnosis:"]
    for finding in summary["diagnosis"]:
        lines += [f"  {finding['title']}", *(f"    {line}" for line in finding["lines"])]
    lines += [
        "",
        f"Run id   {summary['run_id']}",
        f"Report   {_shown(summary['report_path'])}",
        f"Page     {_shown(summary['page_path'])} (the HTML report, fetched through the notification's link)",
        f"Logs     {_shown(summary['log_path'])}",
        f"Skipped  {', '.join(summary['skipped_resource_types']) or 'nothing'} (moto cannot create these)",
        *_iam_lines(summary["iam"]),
        f"Took {seconds_text(summary['seconds'])}: {summary['lambda_invocations']} Lambda invocations, "
        f"{summary['state_transitions']} state transitions ({summary['scenario']} scenario)",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _iam_lines(iam: dict[str, Any]) -> list[str]:
    lines = [
        f"IAM      {iam['calls']} calls checked across {iam['roles']} roles and {iam['deliveries']} "
        f"EventBridge deliveries: {len(iam['denied'])} denied"
    ]
    lines += [f"  denied         {name}" for name in iam["denied"]]
    return lines


AWS_LINE = "on AWS this run would take about"


def _aws_column(phase: dict[str, Any]) -> str:
    """The phase's modelled time on AWS, beside the rehearsal's, when there is one."""
    if "aws_seconds" not in phase:
        return ""
    seconds = phase["aws_seconds"]
    return f"  {'on AWS ' + minutes_text(seconds) if seconds is not None else '':>17}"


def _phase_seconds(seconds: float) -> str:
    return f"{seconds} s" if isinstance(seconds, int) else seconds_text(seconds)


def _clock_of(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return stamp


# ---- scalelab emulator -----------------------------------------------------------------------------


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, with the previous handlers restored afterwards."""
    stop = threading.Event()

    def on_signal(_number: int, _frame: FrameType | None) -> None:
        stop.set()

    saved = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def _emulator(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    if args.port is not None and _port_taken(args.port):
        err.write(
            f"{PROG} emulator: port {args.port} on 127.0.0.1 is in use; "
            "pick another with --port N, or leave it out\n"
        )
        return EXIT_USAGE
    speed = args.speed or DEFAULT_SPEED
    emulator = Emulator(port=args.port)
    log_path = LOGS_DIR / f"emulator-{datetime.now(UTC):%Y%m%d-%H%M%S}-{emulator.port}.log"
    out.write(f"Starting emulated AWS on 127.0.0.1:{emulator.port} and deploying the scalelab stack...\n")
    out.flush()
    with _stop_on_signals() as stop, _output_to_run_log(log_path):
        try:
            emulator.start()
        except Exception as error:  # a broken setup: an exit status and a hint, not a traceback
            LOG.exception("the emulator did not start")
            emulator.stop()
            err.write(
                f"{PROG} emulator: the emulated account did not start: {type(error).__name__}: {error}\n"
                f"  the traceback is in {_shown(log_path)}; {SETUP_HINT}\n"
            )
            return EXIT_USAGE
        try:
            with World(emulator, scenario_named(args.scenario), speed):
                out.write(_emulator_banner(emulator, args.scenario, speed, log_path))
                out.flush()
                while not stop.wait(0.5):
                    pass
        finally:
            emulator.stop()
    out.write("Stopped.\n")
    return EXIT_PASSED


def _emulator_banner(emulator: Emulator, scenario: str, speed: float, log_path: Path) -> str:
    """Where the emulator is, and what to paste into a shell to start and follow a run."""
    endpoint, state_machine_arn, region = emulator.endpoint, emulator.state_machine_arn, REGION
    aws = f"aws --endpoint-url {endpoint} stepfunctions"
    credentials = f"AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION={region}"
    janitor = emulator.stack.outputs.get("JanitorFunctionName", "") if emulator.stack else ""
    return (
        f"\nEmulated AWS is up; the stack is deployed (scenario {scenario}, world clock {speed:g}x).\n"
        f"  endpoint       {endpoint}\n"
        f"  region         {region} (any credentials are accepted, e.g. AWS_ACCESS_KEY_ID=testing)\n"
        f"  state machine  {state_machine_arn}\n"
        f"  logs           {_shown(log_path)} (the functions' output and the emulator's warnings)\n"
        f"  skipped        {', '.join(emulator.stack.skipped_types) if emulator.stack else ''} "
        "(moto cannot create these)\n"
        "\nStart a run (Wait states take real seconds: events/start-execution.json polls every 15 s):\n"
        f"  export {credentials}\n"
        f"  {aws} start-execution --state-machine-arn {state_machine_arn} \\\n"
        f'    --name "run-$(date +%Y%m%d-%H%M%S)" --input file://{_shown(START_INPUT)}\n'
        "Follow it:\n"
        f"  {aws} describe-execution --query '[status,cause]' --execution-arn <executionArn from above>\n"
        "Sweep for what ended runs left (the janitor's hourly schedule is not emulated; fileb:// passes\n"
        "the event as it is, which AWS CLI v1 and v2 both accept):\n"
        f"  aws --endpoint-url {endpoint} lambda invoke --function-name {janitor} \\\n"
        f"    --payload fileb://{_shown(SWEEP_EVENT)} /dev/stdout\n"
        "\nCtrl-C stops the emulator.\n"
    )


def console_main() -> None:
    """The ``scalelab`` command: ``main``, then a prompt exit.

    The rehearsal loads moto, botocore and every handler's dependencies (some
    hundred thousand objects); tearing them down one by one takes longer than
    a rehearsal's phases. The output is flushed and the emulator is stopped,
    so nothing is lost by leaving at once.
    """
    code = main()
    _RUN_LOG.close_file()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
