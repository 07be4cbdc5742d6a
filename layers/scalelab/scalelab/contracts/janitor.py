"""The janitor's two events (a discriminated union on ``action``) and their results."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, RootModel

from scalelab.contracts.base import InputModel, OutputModel
from scalelab.contracts.resources import ResourceRef


class SweepEvent(InputModel):
    """From the janitor's schedule: sweep what ended runs left behind."""

    action: Literal["sweep"]


class CloseEvent(InputModel):
    """From the cleanup state machine: the lab execution that ended abnormally, and how."""

    action: Literal["close"]
    execution_name: str = Field(min_length=1, max_length=80)
    status: Literal["ABORTED", "TIMED_OUT", "FAILED"]


class JanitorEvent(RootModel[Annotated[SweepEvent | CloseEvent, Field(discriminator="action")]]):
    """``{"action": "sweep"}`` or ``{"action": "close", "execution_name": ..., "status": ...}``."""

    discriminator: ClassVar[str] = "action"


class CloseResult(OutputModel):
    run_id: str
    execution_status: str
    # False when Prepare never recorded the run (the close made its record).
    had_record: bool
    poll_seconds: int


class RunResource(OutputModel):
    """A resource of one run, as the sweep found it."""

    run_id: str
    resource: ResourceRef


class SweepProblem(OutputModel):
    """What the sweep could not remove (``resource`` is None when a whole run's ledger failed), and why."""

    run_id: str
    resource: ResourceRef | None
    reason: str


class SweepResult(OutputModel):
    removed: list[RunResource]
    could_not_remove: list[SweepProblem]
    skipped: list[str]
    locks_released: list[str]
