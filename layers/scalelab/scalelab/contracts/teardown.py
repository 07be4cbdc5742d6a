"""Teardown's event, the run to tear down, and what one pass did; the state machine loops until ``done``."""

from __future__ import annotations

from scalelab.contracts.base import OutputModel, RunId
from scalelab.contracts.resources import ResourceRef


class RunRef(OutputModel):
    """The least a step needs to find a run: its id (teardown)."""

    run_id: RunId


class TeardownResult(OutputModel):
    done: bool
    removed: list[ResourceRef]
    remaining: list[ResourceRef]
    refused: list[ResourceRef]
