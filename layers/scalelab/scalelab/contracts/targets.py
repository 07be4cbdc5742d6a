"""CheckTargets: what the state machine asks of the run's target group, and the snapshot it gets back."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from scalelab.contracts.base import InputModel, OutputModel, RunId, Timestamp, TimestampText


class CheckTargetsEvent(InputModel):
    """Expect either ``healthy_count`` healthy targets, or ``instance_id`` healthy."""

    run_id: RunId
    target_group_arn: str = Field(pattern=r"^arn:aws[a-z-]*:elasticloadbalancing:.+:targetgroup/scalelab-")
    since: Timestamp
    within_seconds: int = Field(ge=1, le=86_400)
    healthy_count: int | None = Field(default=None, ge=1)
    instance_id: str | None = Field(default=None, pattern=r"^i-[0-9a-f]{8,17}$")

    @model_validator(mode="after")
    def _one_expectation(self) -> Self:
        if (self.healthy_count is None) == (self.instance_id is None):
            raise ValueError("give exactly one of healthy_count and instance_id")
        return self


class TargetSnapshot(OutputModel):
    expectation: str
    expectation_met: bool
    counts: dict[str, int]
    healthy_instances: list[str]
    targets: dict[str, str]
    checked_at: TimestampText
    elapsed_seconds: int
    deadline_at: str
