"""The signal a lab's group scales on: one of target tracking's predefined metrics, and its target.

Each metric's default target is a template Parameter, and its bounds are that Parameter's
MinValue and MaxValue (a contract test keeps the two in step): a run input may ask for any
target within them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from scalelab.contracts.base import InputModel, OutputModel
from scalelab.core.settings import defaults_of

ScalingMetric = Literal["cpu", "network_in", "network_out", "request_count"]


@dataclass(frozen=True)
class MetricSpec:
    """How target tracking names a metric, what its target counts, and where its default lives."""

    predefined_type: str  # PredefinedMetricSpecification.PredefinedMetricType
    unit: str  # what the target counts, as a person reads it
    minimum: float
    maximum: float
    default_attribute: str  # the RunDefaults field (and so the template Parameter) it defaults to
    parameter: str


# Network and request targets count per minute: the launch template turns on detailed
# monitoring, so EC2 publishes one-minute datapoints, and ALB's RequestCountPerTarget is a
# one-minute Sum. The minimums sit above what an idle instance sees (health checks, the SSM
# agent), so a target at the minimum still needs the load to reach it.
METRICS: dict[str, MetricSpec] = {
    "cpu": MetricSpec(
        "ASGAverageCPUUtilization", "% average CPU", 1, 99, "cpu_target_percent", "CpuTargetPercent"
    ),
    "network_in": MetricSpec(
        "ASGAverageNetworkIn",
        "bytes received per instance per minute",
        100_000,
        1_000_000_000,
        "network_in_target_bytes",
        "NetworkInTargetBytes",
    ),
    "network_out": MetricSpec(
        "ASGAverageNetworkOut",
        "bytes sent per instance per minute",
        100_000,
        1_000_000_000,
        "network_out_target_bytes",
        "NetworkOutTargetBytes",
    ),
    "request_count": MetricSpec(
        "ALBRequestCountPerTarget",
        "requests per target per minute",
        10,
        1_000_000,
        "request_count_target",
        "RequestCountTarget",
    ),
}


def check_target(metric: str, target: float) -> None:
    """A ValueError (which pydantic reports) when ``target`` is outside the metric's bounds."""
    spec = METRICS[metric]
    if not spec.minimum <= target <= spec.maximum:
        raise ValueError(
            f"{target:g} for {metric} is outside {spec.minimum:g} to {spec.maximum:g} "
            f"({spec.unit}, the bounds of the {spec.parameter} Parameter); pick a target within them"
        )


class ScalingShape(BaseModel):
    """A signal and its target, within the metric's bounds (the same rules in the input and the config)."""

    model_config = ConfigDict(defer_build=True)  # as every contract (contracts/base.py)

    metric: ScalingMetric
    target: float

    @field_validator("target")
    @classmethod
    def _target_within_bounds(cls, value: float, info: ValidationInfo) -> float:
        # A field validator, so the message names lab.scaling.target; a bad metric is named
        # on its own (and is then missing here).
        if "metric" in info.data:
            check_target(info.data["metric"], value)
        return value


class Scaling(OutputModel, ScalingShape):
    """The resolved signal: every later state reads this, so Provision checks it again."""

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.metric]

    def describe(self) -> str:
        """The target as a person reads it, e.g. ``6,000,000 bytes sent per instance per minute``
        (digits grouped, never an exponent)."""
        amount = f"{self.target:,.0f}" if float(self.target).is_integer() else f"{self.target:,}"
        return f"{amount} {self.spec.unit}"


class ScalingInput(InputModel, ScalingShape):
    """``lab.scaling`` in the run input: the metric defaults to cpu, the target to its Parameter."""

    metric: ScalingMetric = "cpu"

    @model_validator(mode="before")
    @classmethod
    def _default_target(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or "target" in data:
            return data
        metric = data.get("metric", "cpu")
        if not isinstance(metric, str) or metric not in METRICS:
            return data  # validation names the bad metric
        return {**data, "target": getattr(defaults_of(info), METRICS[metric].default_attribute)}
