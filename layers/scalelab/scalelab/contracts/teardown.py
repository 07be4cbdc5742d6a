"""What one teardown pass did; the state machine loops until ``done``."""

from __future__ import annotations

from scalelab.contracts.base import OutputModel
from scalelab.contracts.resources import ResourceRef


class TeardownResult(OutputModel):
    done: bool
    removed: list[ResourceRef]
    remaining: list[ResourceRef]
    refused: list[ResourceRef]
