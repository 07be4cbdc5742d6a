"""How long the offline rehearsal takes, from process start to verdict.

Each run is a fresh process, ``python -m scalelab_rehearsal.cli rehearse
--json``, timed from spawn to exit, so interpreter start, imports, the
emulator's deploy, the whole workflow and the interpreter's exit all count, as
they do for a person typing ``scalelab rehearse``. The moment the verdict
arrives on stdout is noted too. Prints the figures and whether the target is
met; it never fails on the target, only when a run gives no passing verdict.

    python rehearsal/bench.py [--runs N] [--suite]

``--suite`` also times the workflow test suite (``pytest tests/workflow``, on two
workers per core as `make test` runs it) once, the figure that says whether it stays
fast enough for every change.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 3.0
TARGET_CORES = 2
RUN_TIMEOUT_SECONDS = 300.0
COMMAND = ["-m", "scalelab_rehearsal.cli", "rehearse", "--json"]


@dataclass
class Run:
    to_exit: float  # spawn -> the process has exited
    to_verdict: float | None  # spawn -> the verdict's first byte on stdout
    result: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and bool(self.result.get("passed"))


def rehearse_once() -> Run:
    """One fresh ``scalelab rehearse --json`` process, timed."""
    environment = dict(os.environ)
    # Works from a checkout without `pip install -e .`, too.
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "rehearsal"), *filter(None, [environment.get("PYTHONPATH")])]
    )
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        process = subprocess.Popen(  # noqa: S603 - this interpreter and our own module, no shell
            [sys.executable, *COMMAND], cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=errors
        )
        timer = threading.Timer(RUN_TIMEOUT_SECONDS, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            first = process.stdout.read(1)  # --json writes only the outcome, all at once at the end
            to_verdict = time.perf_counter() - started if first else None
            output = (first + process.stdout.read()).decode()
            code = process.wait()
            to_exit = time.perf_counter() - started
        finally:
            timer.cancel()
            process.stdout.close()  # type: ignore[union-attr]
        errors.seek(0)
        stderr = errors.read()
    try:
        result = json.loads(output)
    except ValueError:
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or f"exit status {code}"
        return Run(to_exit, None, problem=f"no JSON outcome ({tail})")
    problem = None if code == 0 else f"exit status {code}: {result.get('reason')}"
    return Run(to_exit, to_verdict, result, problem)


def time_workflow_suite() -> str:
    """Wall time of ``pytest tests/workflow`` on as many workers as `make unit` gives 3.13 (two
    per core), with pytest's own closing line."""
    workers = 2 * (os.cpu_count() or 1)
    started = time.perf_counter()
    finished = subprocess.run(  # noqa: S603 - this interpreter running pytest, no shell
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/workflow",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            str(workers),
            "--dist",
            "loadgroup",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS * 4,
        check=False,
    )
    seconds = time.perf_counter() - started
    closing = next(
        (line.strip("= ") for line in reversed(finished.stdout.splitlines()) if " in " in line), "no result"
    )
    return f"\nworkflow suite (pytest tests/workflow, {workers} workers): {seconds:.1f} s wall; {closing}"


AWS_GOAL_SECONDS = 7 * 60  # issue 14: a verdict on AWS, teardown done, within 7 minutes


def aws_line(runs: list[Run]) -> str:
    """The runs' time modelled on AWS (deterministic: one figure for the same phases), beside the
    wall times, against the goal."""
    figures = sorted(
        {run.result["aws"]["until_torn_down_seconds"] for run in runs if run.result.get("aws") is not None}
    )
    if not figures:
        return "modelled on AWS: no run gave a model\n"
    shown = " / ".join(f"{round(seconds) // 60} min {round(seconds) % 60} s" for seconds in figures)
    met = "met" if max(figures) < AWS_GOAL_SECONDS else "NOT met"
    return (
        f"modelled on AWS, execution start to teardown done: {shown} "
        f"(goal under {AWS_GOAL_SECONDS // 60} min: {met}; docs/performance.md)\n"
    )


def _figure(value: object, width: int) -> str:
    return f"{value:{width}.2f}" if isinstance(value, int | float) else f"{'-':>{width}}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the pass rehearsal from process start to verdict.")
    parser.add_argument(
        "--runs", type=int, default=5, metavar="N", help="fresh processes to time (default: 5)"
    )
    parser.add_argument(
        "--suite", action="store_true", help="also time the workflow test suite (pytest tests/workflow) once"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    cores = os.cpu_count() or 0
    out = sys.stdout
    out.write(
        f"scalelab rehearsal benchmark: {args.runs} fresh processes of "
        f"`python {' '.join(COMMAND)}` (pass scenario)\n"
        f"Python {sys.version.split()[0]} on {cores} cores\n\n"
        "  to exit     spawn -> process exited (the figure the target is about)\n"
        "  to verdict  spawn -> the outcome printed\n"
        "  in run      what the CLI reports: emulator start, deploy, workflow, report\n\n"
    )
    columns = ("run", "to exit", "to verdict", "in run", "transitions", "lambdas")
    out.write(f"{columns[0]:>3}  " + "  ".join(f"{name:>11}" for name in columns[1:]) + "  verdict\n")
    runs: list[Run] = []
    for number in range(1, args.runs + 1):
        run = rehearse_once()
        runs.append(run)
        verdict = "PASSED" if run.passed else f"FAILED: {run.problem or run.result.get('reason')}"
        figures = [
            _figure(run.to_exit, 11),
            _figure(run.to_verdict, 11),
            _figure(run.result.get("seconds"), 11),
            f"{run.result.get('state_transitions', '-'):>11}",
            f"{run.result.get('lambda_invocations', '-'):>11}",
        ]
        out.write(f"{number:>3}  " + "  ".join(figures) + f"  {verdict}\n")
        out.flush()

    to_exit = [run.to_exit for run in runs]
    median = statistics.median(to_exit)
    verdicts = [run.to_verdict for run in runs if run.to_verdict is not None]
    out.write(f"\nmedian to exit {median:.2f} s (min {min(to_exit):.2f}, max {max(to_exit):.2f})")
    out.write(f", to verdict {statistics.median(verdicts):.2f} s\n" if verdicts else "\n")
    out.write(
        f"target: median under {TARGET_SECONDS:g} s from process start on a {TARGET_CORES}-core machine: "
        f"{'met' if median < TARGET_SECONDS else 'NOT met'} ({median:.2f} s here, {cores} cores"
        f"{'' if cores == TARGET_CORES else ', so only indicative'})\n"
    )
    out.write(aws_line(runs))
    if args.suite:
        out.write(time_workflow_suite() + "\n")
    failed = [str(number) for number, run in enumerate(runs, 1) if not run.passed]
    if failed:
        out.write(f"runs without a passing verdict: {', '.join(failed)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
