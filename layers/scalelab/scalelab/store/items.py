"""The run table's items, as pydantic models (the key schema is in ``store.table``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from scalelab.contracts.resources import Kind
from scalelab.contracts.scaleout import ScalingActivity, WaitOutcome
from scalelab.store.table import LOCK_SK


class Item(BaseModel):
    """Base of a stored item: attributes it does not name are kept in the table, ignored here."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class RemovedResource(Item):
    """A ledger entry teardown deleted: its id or ARN, and when AWS confirmed it gone."""

    id: str
    removed_at: int


class RunRecord(Item):
    """``RUN#<run id>`` / ``RUN``: what happened to a run, and its resource ledger.

    ``resources`` maps a kind to the id or ARN of what the run created: an entry
    is written as soon as the resource exists and moved to ``removed`` (with the
    moment) once teardown has deleted it. ``refused`` holds entries whose resource
    was not tagged for the run.
    """

    run_id: str
    status: str = "unknown"
    lab_name: str | None = None
    resources: dict[Kind, str] = Field(default_factory=dict)
    refused: dict[Kind, str] = Field(default_factory=dict)
    removed: dict[Kind, RemovedResource] = Field(default_factory=dict)
    reason: str | None = None
    torn_down_at: int | None = None
    started_at: int | None = None
    # The Step Functions execution the run belongs to, so the janitor can ask whether it still runs.
    execution_name: str | None = None


class LabLock(Item):
    """``LAB#<lab>`` / ``LOCK``: a lease on the lab, naming the run that holds it."""

    pk: str
    sk: str = LOCK_SK
    run_id: str = ""
    acquired_at: int | None = None
    lease_expires_at: int = 0

    @property
    def lab_name(self) -> str:
        return self.pk.removeprefix("LAB#")


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
