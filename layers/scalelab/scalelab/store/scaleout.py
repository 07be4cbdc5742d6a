"""The scale-out meeting point: a run's Auto Scaling event log and its waiting task token.

``steps.scaleout`` holds the meeting's logic; this module only keeps its items.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scalelab.contracts.scaleout import AwaitScaleOutEvent, ScalingActivity, WaitOutcome
from scalelab.core.observability import logger
from scalelab.core.settings import TableSettings
from scalelab.store.items import Item
from scalelab.store.table import EVENT_SK_PREFIX, Table, event_key, run_partition, waiter_key

# Attributes of a claim, removed whole when a new token replaces the waiter.
CLAIM_ATTRIBUTES = (
    "completed_by, claimed_at, completed_at, outcome, task_output, task_error, task_cause, stale_code"
)


class LoggedEvent(ScalingActivity, Item):
    """``RUN#<run id>`` / ``EVENT#<event id>``: one Auto Scaling event, logged once per EventBridge id."""

    event_id: str
    detail_type: str
    time: datetime
    availability_zone: str = ""

    @property
    def launched_at(self) -> datetime:
        """When the launch began: the activity's StartTime, else the event's time."""
        return self.start_time or self.time


class StoredEvent(LoggedEvent):
    """A logged event with its key, its run and its expiry, as written."""

    pk: str
    sk: str
    run_id: str
    recorded_at: int
    expires_at: int


class Waiter(Item):
    """``RUN#<run id>`` / ``SCALEOUT_WAIT``: the task token waiting for the scale-out, and its claim."""

    task_token: str
    auto_scaling_group_name: str
    stress_started_at: datetime
    # The group when the stress began: a scale-out launches another instance, beyond this capacity.
    instances_before: list[str]
    desired_capacity: int
    # The event that claimed the waiter, and once Step Functions has been told, when and how.
    completed_by: str | None = None
    completed_at: int | None = None
    outcome: WaitOutcome | None = None

    @property
    def claimed(self) -> bool:
        return self.completed_by is not None

    @property
    def finished(self) -> bool:
        return self.completed_at is not None


class ScaleOutTable:
    """The run's Auto Scaling event log and scale-out waiter, in the run table."""

    def __init__(self, settings: TableSettings) -> None:
        self.table = Table(settings)

    # ---- the event log -----------------------------------------------------------------

    def record_event(self, run_id: str, event: LoggedEvent, now: float) -> bool:
        """Log an event once per EventBridge event id; False when it was already logged."""
        stored = StoredEvent(
            **event.model_dump(),
            **event_key(run_id, event.event_id),
            run_id=run_id,
            recorded_at=int(now),
            expires_at=self.table.expires_at(now),
        )
        return self.table.put(stored, condition="attribute_not_exists(sk)").done

    def logged_events(self, run_id: str) -> list[LoggedEvent]:
        return self.table.query(run_partition(run_id), EVENT_SK_PREFIX, LoggedEvent)

    # ---- the waiter --------------------------------------------------------------------

    def put_waiter(self, wait: AwaitScaleOutEvent, now: float) -> bool:
        """Store the token; False when this very token is stored already (a retried invocation).

        A different token replaces the waiter whole, claim included: each token
        is a wait of its own, and the event log still holds every event for it.
        """
        return self.table.update(
            waiter_key(wait.run_id),
            "SET run_id = :run, task_token = :token, auto_scaling_group_name = :group, "
            "stress_started_at = :stress, instances_before = :before, desired_capacity = :desired, "
            f"waiting_since = :now, expires_at = :ttl REMOVE {CLAIM_ATTRIBUTES}",
            condition="attribute_not_exists(task_token) OR task_token <> :token",
            values={
                ":run": wait.run_id,
                ":token": wait.task_token,
                ":group": wait.auto_scaling_group_name,
                ":stress": wait.stress_started_at.isoformat(),
                ":before": list(wait.instances_before),
                ":desired": wait.desired_capacity,
                ":now": int(now),
                ":ttl": self.table.expires_at(now),
            },
        ).done

    def load_waiter(self, run_id: str) -> Waiter | None:
        return self.table.get(waiter_key(run_id), Waiter)

    def claim(self, run_id: str, task_token: str, event_id: str, now: float) -> bool:
        """Claim the waiter for one event; only the caller that gets True may complete the token.

        The same event may claim again while its completion is unfinished (a
        redelivery after Step Functions could not be reached); no other may.
        """
        return self.table.update(
            waiter_key(run_id),
            "SET completed_by = :event, claimed_at = :now",
            condition=(
                "task_token = :token AND (attribute_not_exists(completed_by) "
                "OR (completed_by = :event AND attribute_not_exists(completed_at)))"
            ),
            values={":token": task_token, ":event": event_id, ":now": int(now)},
        ).done

    def finish(
        self,
        run_id: str,
        *,
        task_token: str,
        event_id: str,
        outcome: WaitOutcome,
        details: dict[str, str],
        now: float,
    ) -> None:
        """Note what Step Functions answered; a real completion always wins over "stale"."""
        values: dict[str, Any] = {
            ":token": task_token,
            ":event": event_id,
            ":now": int(now),
            ":outcome": outcome,
        }
        assignments = [
            "completed_at = if_not_exists(completed_at, :now)",
            "outcome = if_not_exists(outcome, :outcome)" if outcome == "stale" else "outcome = :outcome",
        ]
        for index, (name, value) in enumerate(sorted(details.items())):
            assignments.append(f"{name} = :d{index}")
            values[f":d{index}"] = value
        finished = self.table.update(
            waiter_key(run_id),
            "SET " + ", ".join(assignments),
            condition="task_token = :token AND completed_by = :event",
            values=values,
        )
        if not finished.done:
            logger.info("the waiter was replaced by a newer token meanwhile", extra={"event_id": event_id})
