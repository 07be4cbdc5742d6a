"""The load generator of a network or request signal: its plan, a worker's round and what it measured.

StartStress plans the load (``LoadPlan``) and starts the load state machine with it; the machine
hands each worker of each round a ``WorkerEvent``; each worker returns, and records on the run,
its ``Measurement``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scalelab.contracts.base import InputModel, OutputModel, RunId, TimestampText
from scalelab.contracts.scaling import ScalingMetric

# The app's load endpoints refuse a body, or a download, above this (app.js, the world's front door).
MAX_TRANSFER_BYTES = 1_048_576
# A worker is one Lambda invocation: its round must end well within the function's 900 s limit.
MAX_ROUND_SECONDS = 600
MAX_WORKERS = 100

LoadMethod = Literal["GET", "POST"]


class LoadPlan(OutputModel):
    """What the load sends, how fast and until when, and why that fast.

    ``aimed_per_instance_per_minute`` is twice the target spread over the group's desired
    capacity (so the policy must scale out); ``planned_per_instance_per_minute`` is what the
    caps leave of it, in the metric's unit. ``capped_below_target`` says the caps keep the load
    under the target itself: then no scale-out is expected, and ``note`` says which cap.
    """

    run_id: RunId
    metric: ScalingMetric
    target: float
    desired_capacity: int
    method: LoadMethod
    url: str
    # The size of each POST body (network_in), or of each download (network_out); 0 for request_count.
    transfer_bytes: int = Field(ge=0, le=MAX_TRANSFER_BYTES)
    requests_per_second: float = Field(gt=0)
    bytes_per_second: float = Field(ge=0)
    workers: int = Field(ge=1, le=MAX_WORKERS)
    # Each worker's share of requests_per_second (the Map hands it to every worker as it is).
    worker_requests_per_second: float = Field(gt=0)
    # The Map's items: one per worker.
    worker_ids: list[int]
    round_seconds: int = Field(ge=1, le=MAX_ROUND_SECONDS)
    # Rounds are counted from 0: the machine ends after this one. Each round ends at the load's
    # end time at the latest, so the count bounds the load even when rounds start late.
    last_round: int = Field(ge=0)
    started_at: TimestampText
    end_at: TimestampText
    aimed_per_instance_per_minute: float
    planned_per_instance_per_minute: float
    capped_below_target: bool
    note: str


class WorkerEvent(InputModel):
    """One worker's part of one round, as the load state machine's Map hands it out."""

    run_id: RunId
    metric: ScalingMetric
    method: LoadMethod
    url: str = Field(pattern=r"^https?://[^/\s]+/\S*$", max_length=2048)
    transfer_bytes: int = Field(ge=0, le=MAX_TRANSFER_BYTES)
    # This worker's share of the plan's rate.
    requests_per_second: float = Field(gt=0, le=10_000)
    round_seconds: int = Field(ge=1, le=MAX_ROUND_SECONDS)
    end_at: TimestampText
    worker: int = Field(ge=0, lt=MAX_WORKERS)
    round: int = Field(ge=0)


class Measurement(OutputModel):
    """What one worker sent in one round, as it measured it (the item ``LOAD#<round>#<worker>``)."""

    run_id: str
    metric: str
    round: int
    worker: int
    started_at: str
    ended_at: str
    seconds: float
    requests_ok: int
    requests_failed: int
    bytes_sent: int
    bytes_received: int
    # Why requests failed: an HTTP status, ``timeout`` or ``connection_error``, with its count.
    failures: dict[str, int] = Field(default_factory=dict)
