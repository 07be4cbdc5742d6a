"""The run table's items, as pydantic models (the key schema is in ``store.table``); the scale-out's
event log and waiter are with their owner, ``store.scaleout``, which only its steps import."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scalelab.contracts.resources import Kind
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
