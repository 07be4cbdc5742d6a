"""The workflow's phases, followed from the execution history, and two ways to show them.

``PhaseTracker`` turns Step Functions history events (as boto3 returns them)
into phase changes; it does no output. ``LiveProgress`` redraws one line per
phase in place on a terminal (ANSI cursor movement); ``PlainProgress`` writes
one line per change, for logs and pipes.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TextIO


@dataclass(frozen=True)
class PhaseSpec:
    key: str
    label: str
    states: frozenset[str]


def _phase(key: str, label: str, *states: str) -> PhaseSpec:
    return PhaseSpec(key, label, frozenset(states))


# The workflow's phases in order, each with the states of statemachines/lab.asl.json it covers.
PHASES: tuple[PhaseSpec, ...] = (
    _phase("prepare", "Prepare", "Prepare"),
    _phase("provision", "Provision", "Provision"),
    _phase("wait_healthy", "Wait healthy", "CheckHealthy", "Healthy?", "WaitForHealthy"),
    _phase("probe", "Probe", "Probe", "ProbePassed?"),
    _phase("stress", "Stress", "StartStress"),
    _phase("scale_out", "Scale-out", "AwaitScaleOut", "CheckScaleOut"),
    _phase(
        "new_instance_healthy", "New instance healthy", "CheckNewHealthy", "NewHealthy?", "WaitForNewHealthy"
    ),
    _phase("stop_stress", "Stop stress", "StopStress", "StopStressAfterError", "ScaleIn?"),
    _phase("scale_in", "Scale-in", "LoadStopped", "CheckScaleIn", "ScaledIn?", "WaitForScaleIn"),
    _phase("judge", "Judge", "Judge", "JudgeFailed"),
    _phase("teardown", "Teardown", "Teardown", "TeardownDone?", "WaitForRelease"),
    # The report page is written after Teardown and is what the notification links to.
    _phase("notify", "Notify", "PageToWrite?", "PublishReport", "Notify"),
)

Status = Literal["pending", "running", "done", "failed", "skipped"]
Kind = Literal["started", "done", "failed", "retrying"]

# A task's attempt ended in error (Retry or Catch decide what follows).
_FAILURE_EVENTS = frozenset(
    {
        "LambdaFunctionFailed",
        "LambdaFunctionTimedOut",
        "LambdaFunctionStartFailed",
        "LambdaFunctionScheduleFailed",
        "TaskFailed",
        "TaskTimedOut",
        "TaskStartFailed",
        "TaskSubmitFailed",
    }
)
_SUCCESS_EVENTS = frozenset({"LambdaFunctionSucceeded", "TaskSucceeded"})
_ATTEMPT_EVENTS = frozenset({"LambdaFunctionScheduled", "TaskScheduled"})
_EXECUTION_END = frozenset({"ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"})


@dataclass
class Phase:
    spec: PhaseSpec
    status: Status = "pending"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None  # the last attempt's error, until an attempt succeeds
    retries: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Change:
    kind: Kind
    phase: Phase
    at: datetime
    detail: str | None = None


def _details(event: dict[str, Any], suffix: str) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith(suffix) and isinstance(value, dict):
            return value
    return {}


def _error_of(event: dict[str, Any]) -> str:
    details = _details(event, "EventDetails")
    if event["type"].endswith("TimedOut"):
        return str(details.get("error") or "States.Timeout")
    return str(details.get("error") or event["type"])


class PhaseTracker:
    """The phases' state, fed one history event at a time, in history order."""

    def __init__(self, phases: Sequence[PhaseSpec] = PHASES) -> None:
        self.phases = [Phase(spec) for spec in phases]
        self._by_state = {state: phase for phase in self.phases for state in phase.spec.states}
        self.current: Phase | None = None
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.outcome: str | None = None  # the execution's end event type

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def feed(self, event: dict[str, Any]) -> list[Change]:
        kind: str = event["type"]
        at: datetime = event["timestamp"]
        if kind == "ExecutionStarted":
            self.started_at = at
            return []
        if kind.endswith("StateEntered"):
            name = _details(event, "stateEnteredEventDetails").get("name", "")
            return self._enter(self._by_state.get(name), at)
        phase = self.current
        if kind in _FAILURE_EVENTS and phase is not None:
            phase.error = _error_of(event)
        elif kind in _SUCCESS_EVENTS and phase is not None:
            phase.error = None
        elif kind in _ATTEMPT_EVENTS and phase is not None and phase.error is not None:
            # Scheduled again after a failed attempt without leaving the state: a Retry.
            error, phase.error = phase.error, None
            phase.retries.append(error)
            return [Change("retrying", phase, at, error)]
        elif kind in _EXECUTION_END:
            self.outcome = kind
            self.ended_at = at
            changes = self._close(at, failed=kind != "ExecutionSucceeded")
            for pending in self.phases:
                if pending.status == "pending":
                    pending.status = "skipped"
            return changes
        return []

    def _enter(self, phase: Phase | None, at: datetime) -> list[Change]:
        if phase is not None and phase is self.current:
            return []
        changes = self._close(at)
        if phase is not None:
            phase.status = "running"
            phase.started_at = phase.started_at or at
            phase.ended_at = None
            self.current = phase
            changes.append(Change("started", phase, at))
        return changes

    def _close(self, at: datetime, failed: bool = False) -> list[Change]:
        """End the current phase: failed if its last attempt failed (a Catch moved on) or the run did."""
        phase, self.current = self.current, None
        if phase is None:
            return []
        phase.ended_at = at
        if phase.error is not None or failed:
            phase.status = "failed"
            return [Change("failed", phase, at, phase.error)]
        phase.status = "done"
        return [Change("done", phase, at)]

    def timeline(self) -> list[dict[str, Any]]:
        """The phases that ran, in the verdict's timeline shape (seconds as a float)."""
        return [
            {
                "name": phase.spec.key,
                "started_at": _iso(phase.started_at),
                "ended_at": _iso(phase.ended_at),
                "seconds": round(phase.seconds, 3),
                "status": phase.status,
            }
            for phase in self.phases
            if phase.started_at is not None and phase.ended_at is not None and phase.seconds is not None
        ]


def tracked(events: Iterable[dict[str, Any]]) -> PhaseTracker:
    tracker = PhaseTracker()
    for event in events:
        tracker.feed(event)
    return tracker


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


def _now() -> datetime:
    return datetime.now(UTC)


class Progress(Protocol):
    def begin(self) -> None: ...
    def on_event(self, event: dict[str, Any]) -> None: ...
    def end(self) -> None: ...


class PlainProgress:
    """One line per change: ``12:00:01 Provision started``, ``12:00:01 Provision done in 0.4 s``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tracker = PhaseTracker()
        self._began: datetime | None = None

    def begin(self) -> None:
        self._began = _now()
        self._line(self._began, "Emulator starting (deploying the stack into moto)")

    def on_event(self, event: dict[str, Any]) -> None:
        if event["type"] == "ExecutionStarted" and self._began is not None:
            ready = event["timestamp"]
            self._line(ready, f"Emulator ready in {seconds_text((ready - self._began).total_seconds())}")
        for change in self.tracker.feed(event):
            self._line(change.at, describe(change))
        if self.tracker.finished:
            self._line(event["timestamp"], _outcome_text(self.tracker))

    def end(self) -> None:
        self.stream.flush()

    def _line(self, at: datetime, text: str) -> None:
        self.stream.write(f"{_clock(at)} {text}\n")
        self.stream.flush()


def describe(change: Change) -> str:
    label = change.phase.spec.label
    seconds = change.phase.seconds
    took = f" in {seconds_text(seconds)}" if seconds is not None else ""
    if change.kind == "started":
        return f"{label} started"
    if change.kind == "retrying":
        return f"{label} retrying after {change.detail}"
    if change.kind == "failed":
        return f"{label} failed{took}" + (f" ({change.detail})" if change.detail else "")
    return f"{label} done{took}"


def _outcome_text(tracker: PhaseTracker) -> str:
    outcome = {
        "ExecutionSucceeded": "succeeded",
        "ExecutionFailed": "failed",
        "ExecutionTimedOut": "timed out",
        "ExecutionAborted": "was aborted",
    }.get(tracker.outcome or "", "ended")
    took = ""
    if tracker.started_at is not None and tracker.ended_at is not None:
        took = f" after {seconds_text((tracker.ended_at - tracker.started_at).total_seconds())}"
    return f"Execution {outcome}{took}"


_UNICODE_MARKS = {"pending": "·", "done": "✓", "failed": "✗", "skipped": "\u2013"}
_ASCII_MARKS = {"pending": ".", "done": "+", "failed": "x", "skipped": "-"}
_SPINNER_UNICODE = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_ASCII = "|/-\\"
_COLOURS = {"done": "\x1b[32m", "failed": "\x1b[31m", "running": "\x1b[36m", "skipped": "\x1b[2m"}
_RESET = "\x1b[0m"


class LiveProgress:
    """One line per phase, redrawn in place (a terminal), with a live clock on the running phase."""

    def __init__(self, stream: TextIO, colour: bool = True, refresh_seconds: float = 0.1) -> None:
        self.stream = stream
        self.tracker = PhaseTracker()
        self.colour = colour
        unicode = "utf" in (getattr(stream, "encoding", None) or "").lower()
        self._marks = _UNICODE_MARKS if unicode else _ASCII_MARKS
        self._spinner = _SPINNER_UNICODE if unicode else _SPINNER_ASCII
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._drawn = 0
        self._frame = 0
        self._began: datetime | None = None
        self._ready: datetime | None = None

    def begin(self) -> None:
        self._began = _now()
        self.stream.write("\x1b[?25l")  # hide the cursor while redrawing
        self._draw()
        self._ticker = threading.Thread(target=self._tick, name="scalelab-progress", daemon=True)
        self._ticker.start()

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            if event["type"] == "ExecutionStarted":
                self._ready = event["timestamp"]
            self.tracker.feed(event)
            self._draw_locked()

    def end(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._draw_locked()
            self.stream.write("\x1b[?25h")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            with self._lock:
                self._frame += 1
                self._draw_locked()

    def _draw(self) -> None:
        with self._lock:
            self._draw_locked()

    def _draw_locked(self) -> None:
        lines = self.lines()
        out = [f"\x1b[{self._drawn}F"] if self._drawn else []
        out.extend(f"\x1b[2K{line}\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def lines(self) -> list[str]:
        """The block as it is now: the emulator's start, then one line per phase."""
        spinner = self._spinner[self._frame % len(self._spinner)]
        rows = [self._emulator_row(spinner)]
        for phase in self.tracker.phases:
            status = phase.status
            seconds = phase.seconds
            if status == "running" and phase.started_at is not None:
                seconds = max(0.0, (_now() - phase.started_at).total_seconds())
            notes = []
            if phase.retries:
                count = len(phase.retries)
                kinds = ", ".join(sorted(set(phase.retries)))
                notes.append(f"{count} {'retry' if count == 1 else 'retries'} ({kinds})")
            if status == "failed" and phase.error:
                notes.append(phase.error)
            if status == "skipped":
                notes.append("skipped")
            mark = spinner if status == "running" else self._marks[status]
            rows.append((status, mark, phase.spec.label, seconds, "; ".join(notes)))
        width = max(len(label) for _status, _mark, label, _seconds, _notes in rows)
        room = max(20, shutil.get_terminal_size().columns - 4)  # a wrapped line would break the redraw
        lines = []
        for row_status, row_mark, label, row_seconds, row_notes in rows:
            took = seconds_text(row_seconds) if row_seconds is not None else ""
            text = f"{label:<{width}}  {took:>9}  {row_notes}".rstrip()
            lines.append(f" {self._paint(row_status, row_mark)} {text[:room]}")
        return lines

    def _emulator_row(self, spinner: str) -> tuple[str, str, str, float | None, str]:
        if self._began is None:
            return "pending", self._marks["pending"], "Emulator", None, ""
        if self._ready is None:
            waited = max(0.0, (_now() - self._began).total_seconds())
            return "running", spinner, "Emulator", waited, "deploying the stack into moto"
        return "done", self._marks["done"], "Emulator", (self._ready - self._began).total_seconds(), ""

    def _paint(self, status: str, mark: str) -> str:
        if not self.colour or status not in _COLOURS:
            return mark
        return f"{_COLOURS[status]}{mark}{_RESET}"
