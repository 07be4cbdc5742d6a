"""Judge: what it reads of the workflow's state (each part may be missing), and the verdict."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from scalelab.contracts.base import OutputModel, TimestampText
from scalelab.contracts.diagnosis import Finding
from scalelab.contracts.load import LoadPlan
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.run import RunConfig
from scalelab.contracts.scaleout import MAX_QUOTED_LAUNCHES, UnsuccessfulLaunch
from scalelab.contracts.targets import TargetSnapshot


class StepError(OutputModel):
    """What a Catch put in ``$.error``."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, defer_build=True)

    error: str = Field(alias="Error")
    cause: str | None = Field(default=None, alias="Cause")

    @property
    def message(self) -> str:
        """The cause a person should read: a Lambda error's ``errorMessage``, else the cause as given."""
        try:
            payload = json.loads(self.cause or "")
        except ValueError:
            return self.cause or ""
        message = payload.get("errorMessage") if isinstance(payload, dict) else None
        return message if isinstance(message, str) else self.cause or ""


class ProbeSummary(OutputModel):
    passed: bool
    reason: str
    # What the diagnosis of a failed probe shows (the probe's result holds them).
    requests: int | None = None
    status_counts: dict[str, int] = Field(default_factory=dict)
    instances: list[str] = Field(default_factory=list)


class StressSummary(OutputModel):
    # Empty for a network or request signal, whose load is the load state machine's
    # (``load_execution_arn``, planned as ``load``), not an SSM command.
    command_id: str = ""
    started_at: TimestampText
    instance_ids: list[str] = Field(default_factory=list)
    load_execution_arn: str | None = None
    load: LoadPlan | None = None

    @field_validator("command_id", mode="before")
    @classmethod
    def _no_command_for_a_load(cls, value: object) -> object:
        return "" if value is None else value


class ScaleOutSummary(OutputModel):
    instance_id: str
    launched_at: TimestampText
    # Where the scale-out was seen: an Auto Scaling event, or only the group's scaling activities.
    seen_in: Literal["event", "scaling_activities"] = "event"
    availability_zone: str = ""
    # The launches that failed before it (AwaitScaleOut and CheckScaleOut bound the quoted ones).
    unsuccessful_launches: int = 0
    unsuccessful: list[UnsuccessfulLaunch] = Field(default_factory=list, max_length=MAX_QUOTED_LAUNCHES)


class ScaleInWait(OutputModel):
    """``$.scale_in_wait``: when the scale-in wait began (the load had stopped)."""

    load_stopped_at: TimestampText


class ScaleInSummary(OutputModel):
    """CheckScaleIn's last look (``$.scale_in``)."""

    expectation_met: bool
    instance_id: str | None = None
    scaled_in_at: TimestampText | None = None
    seen_in: Literal["event", "scaling_activities"] | None = None
    capacity_change: str | None = None


class JudgeEvent(OutputModel):
    """The workflow's state as Judge receives it: only ``config`` is sure to be there."""

    config: RunConfig
    provision: ProvisionResult | None = None
    healthy: TargetSnapshot | None = None
    probe: ProbeSummary | None = None
    stress: StressSummary | None = None
    scale_out: ScaleOutSummary | None = None
    new_healthy: TargetSnapshot | None = None
    # Only when the run set expectations.scale_in_within_seconds.
    scale_in_wait: ScaleInWait | None = None
    scale_in: ScaleInSummary | None = None
    error: StepError | None = None


class Check(OutputModel):
    name: str
    passed: bool
    detail: str


class Phase(OutputModel):
    name: str
    started_at: str
    ended_at: str
    seconds: int


class ReportLocation(OutputModel):
    bucket: str
    key: str


class Verdict(OutputModel):
    run_id: str
    passed: bool
    reason: str
    checks: list[Check]
    timeline: list[Phase]
    report: ReportLocation
    judged_at: str
    # The HTML page beside the JSON report.
    page: ReportLocation | None = None
    # What Notify publishes: the verdict on its first line, then a link to the page. Kept out
    # of the JSON report: its link is signed and expires.
    notification: str = ""
    # Empty when the run passed (contracts.diagnosis; steps.diagnosis reads it).
    diagnosis: list[Finding] = Field(default_factory=list)


class PublishEvent(OutputModel):
    """PublishReport's event: Judge's verdict, which names the JSON report and the page's place."""

    verdict: Verdict
