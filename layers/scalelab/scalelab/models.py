"""Typed shapes of the run input and of what each step hands to the next.

Input models forbid unknown fields (a typo must not silently fall back to a
default) and take every default from the Prepare function's environment,
which template.yaml fills from its Parameters.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Self, TypeVar

from aws_lambda_powertools.utilities.parser import BaseModel, ValidationError, parse
from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from scalelab.clock import as_utc
from scalelab.errors import InvalidInput
from scalelab.naming import ResourceNames, resource_names, run_tags
from scalelab.settings import run_defaults

LAB_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$|^[a-z0-9]$"
RUN_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
SUBNET_ID_PATTERN = r"^subnet-[0-9a-f]{8,17}$"
VPC_ID_PATTERN = r"^vpc-[0-9a-f]{8,17}$"

# ---- timestamps -----------------------------------------------------------------------

# The moments a run can record. Bounding them here means no later date
# arithmetic (a deadline, a duration, a conversion to UTC) can overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _recordable(moment: datetime) -> datetime:
    """``moment`` in UTC, or a ValueError (which pydantic reports) when it is out of range."""
    try:
        utc = as_utc(moment)
    except OverflowError:  # an offset pushing year 1 or 9999 past the calendar's ends
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"{moment.isoformat()} is not a time a run can have (UTC years 1970 to 2999)")
    return utc


def _timestamp_text(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    _recordable(moment)
    return value


# Timestamps travel through the state machine as ISO-8601 strings; held in UTC.
Timestamp = Annotated[datetime, Field(strict=False), AfterValidator(_recordable)]
# One a step wrote and a later one reads back (Judge): kept as written, checked to be readable.
TimestampText = Annotated[str, AfterValidator(_timestamp_text)]

# ---- what a lab is made of (the run input and the run config share these rules) -------------

LabName = Annotated[str, Field(pattern=LAB_NAME_PATTERN)]
AppPort = Annotated[int, Field(ge=1024, le=65535)]
# No quote or shell-special character: the path is written into the instances' user data.
HealthPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]{0,1023}$")]
CpuPercent = Annotated[float, Field(gt=0, lt=100)]


def check_group_sizes(min_size: int, desired_capacity: int, max_size: int) -> None:
    """A ValueError (which pydantic reports) naming why an Auto Scaling group could not have
    these sizes, or could not scale out from them."""
    problems = []
    if desired_capacity < min_size:
        problems.append(f"desired_capacity ({desired_capacity}) is below min_size ({min_size})")
    if max_size < desired_capacity:
        problems.append(f"max_size ({max_size}) is below desired_capacity ({desired_capacity})")
    elif max_size == desired_capacity:
        problems.append(
            f"max_size ({max_size}) must be above desired_capacity "
            f"({desired_capacity}) or the group has no room to scale out"
        )
    if problems:
        raise ValueError("; ".join(problems))


class InputModel(BaseModel):
    """Base of what a person or the state machine sends: strict, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LaunchTemplateRef(InputModel):
    """A launch template the user owns; scalelab uses it as given and never changes it."""

    name: str = Field(min_length=3, max_length=128, pattern=r"^[a-zA-Z0-9()./_-]+$")
    version: str = Field(default="$Default", pattern=r"^(\$Latest|\$Default|[1-9][0-9]*)$")


class LabInput(InputModel):
    name: LabName = Field(default_factory=lambda: run_defaults().lab_name)
    instance_type: str = Field(default_factory=lambda: run_defaults().instance_type)
    min_size: int = Field(default_factory=lambda: run_defaults().min_size, ge=0)
    desired_capacity: int = Field(default_factory=lambda: run_defaults().desired_capacity, ge=1)
    max_size: int = Field(default_factory=lambda: run_defaults().max_size, ge=1)
    app_port: AppPort = Field(default_factory=lambda: run_defaults().app_port)
    health_path: HealthPath = Field(default_factory=lambda: run_defaults().health_path)
    cpu_target_percent: CpuPercent = Field(default_factory=lambda: run_defaults().cpu_target_percent)
    subnet_ids: list[str] = Field(default_factory=lambda: list(run_defaults().subnet_ids))
    launch_template: LaunchTemplateRef | None = None

    @field_validator("instance_type")
    @classmethod
    def _instance_type_allowed(cls, value: str) -> str:
        allowed = run_defaults().allowed_instance_types
        if value not in allowed:
            raise ValueError(
                f"{value!r} is not in the allowed instance types ({', '.join(allowed)}); "
                "pick one of those or widen the AllowedInstanceTypes Parameter"
            )
        return value

    @field_validator("max_size")
    @classmethod
    def _max_size_capped(cls, value: int) -> int:
        cap = run_defaults().max_size_cap
        if value > cap:
            raise ValueError(f"{value} is above the MaxSizeCap Parameter ({cap})")
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _subnet_ids_well_formed(cls, value: list[str]) -> list[str]:
        bad = [subnet for subnet in value if not re.fullmatch(SUBNET_ID_PATTERN, subnet)]
        if bad:
            raise ValueError(f"not subnet ids: {', '.join(map(repr, bad))}")
        if len(set(value)) != len(value):
            raise ValueError("lists a subnet more than once")
        return value

    @model_validator(mode="after")
    def _sizes_consistent(self) -> Self:
        check_group_sizes(self.min_size, self.desired_capacity, self.max_size)
        return self


class StressInput(InputModel):
    duration_seconds: int = Field(default_factory=lambda: run_defaults().stress_seconds, ge=30)

    @field_validator("duration_seconds")
    @classmethod
    def _duration_capped(cls, value: int) -> int:
        cap = run_defaults().stress_seconds_cap
        if value > cap:
            raise ValueError(f"{value} is above the StressDurationCapSeconds Parameter ({cap})")
        return value


class ExpectationsInput(InputModel):
    healthy_within_seconds: int = Field(
        default_factory=lambda: run_defaults().healthy_within_seconds, ge=1, le=86_400
    )
    scale_out_within_seconds: int = Field(
        default_factory=lambda: run_defaults().scale_out_within_seconds, ge=1, le=86_400
    )
    new_instance_healthy_within_seconds: int = Field(
        default_factory=lambda: run_defaults().new_instance_healthy_within_seconds,
        ge=1,
        le=86_400,
    )

    @model_validator(mode="after")
    def _deadlines_fit_the_run(self) -> Self:
        # Past the deadlines the run still stresses, judges and tears down, all before the
        # state machine's own 4-hour timeout, which the cap keeps room for.
        total = (
            self.healthy_within_seconds
            + self.scale_out_within_seconds
            + self.new_instance_healthy_within_seconds
        )
        cap = run_defaults().run_deadlines_cap_seconds
        if total > cap:
            raise ValueError(
                f"the three deadlines add up to {total} s, above the RunDeadlinesCapSeconds "
                f"Parameter ({cap} s); shorten them or raise the Parameter"
            )
        return self


class TimingInput(InputModel):
    poll_seconds: int = Field(default_factory=lambda: run_defaults().poll_seconds, ge=1, le=3600)


class RunInput(InputModel):
    """What a person passes to ``start-execution``; every field is optional."""

    lab: LabInput = Field(default_factory=LabInput)
    stress: StressInput = Field(default_factory=StressInput)
    expectations: ExpectationsInput = Field(default_factory=ExpectationsInput)
    timing: TimingInput = Field(default_factory=TimingInput)


class PrepareEvent(InputModel):
    """What the state machine hands Prepare: the execution's name and its raw input."""

    execution_name: str = Field(min_length=1, max_length=80)
    # Any JSON value: Prepare rejects what is not an object itself, so the rejection is recorded.
    input: Any = Field(default_factory=dict)


# ---- what Prepare hands the later states -------------------------------------------


class OutputModel(BaseModel):
    """Base of what a step returns for later states to read."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class LabConfig(OutputModel):
    """The lab as Prepare resolved it. Provision builds exactly this, so it is checked again here."""

    name: LabName
    instance_type: str = Field(min_length=1)
    min_size: int = Field(ge=0)
    desired_capacity: int = Field(ge=1)
    max_size: int = Field(ge=1)
    app_port: AppPort
    health_path: HealthPath
    cpu_target_percent: CpuPercent
    # A load balancer needs subnets in two availability zones (Prepare checked which).
    subnet_ids: list[Annotated[str, Field(pattern=SUBNET_ID_PATTERN)]] = Field(min_length=2)
    vpc_id: str = Field(pattern=VPC_ID_PATTERN)
    launch_template: LaunchTemplateRef | None = None

    @model_validator(mode="after")
    def _sizes_consistent(self) -> Self:
        check_group_sizes(self.min_size, self.desired_capacity, self.max_size)
        return self


class StressConfig(OutputModel):
    duration_seconds: int


class ExpectationsConfig(OutputModel):
    healthy_within_seconds: int
    scale_out_within_seconds: int
    new_instance_healthy_within_seconds: int


class TimingConfig(OutputModel):
    poll_seconds: int


class RunConfig(OutputModel):
    """The normalised run: every later state reads this, never the raw input.

    Names and tags are derived from the run id, so any others are not a
    config Prepare made: resources tagged for another run would be created
    and then refused by this run's teardown.
    """

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    lab: LabConfig
    stress: StressConfig
    expectations: ExpectationsConfig
    timing: TimingConfig
    names: ResourceNames
    tags: dict[str, str]
    started_at: TimestampText

    @field_validator("names")
    @classmethod
    def _names_of_the_run(cls, value: ResourceNames, info: ValidationInfo) -> ResourceNames:
        run_id = info.data.get("run_id")
        if run_id is not None and value != resource_names(run_id):
            raise ValueError(
                f"are not the names Prepare derives from run_id {run_id!r} "
                f"({resource_names(run_id).model_dump()}); pass the config Prepare returned, unchanged"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags_of_the_run(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        run_id, lab = info.data.get("run_id"), info.data.get("lab")
        if run_id is not None and lab is not None and value != run_tags(run_id, lab.name):
            raise ValueError(
                f"are not the tags Prepare derives from run_id {run_id!r} and lab.name {lab.name!r} "
                f"({run_tags(run_id, lab.name)}); pass the config Prepare returned, unchanged"
            )
        return value


class RunRef(OutputModel):
    """The least a step needs to find a run: its id (teardown, janitor)."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)


class ProvisionResult(OutputModel):
    alb_security_group_id: str
    instance_security_group_id: str
    launch_template_id: str
    launch_template_version: str
    launch_template_owned: bool
    target_group_arn: str
    load_balancer_arn: str
    load_balancer_dns_name: str
    listener_arn: str
    auto_scaling_group_name: str
    scaling_policy_arn: str
    provisioned_at: TimestampText


class TeardownResult(OutputModel):
    done: bool
    removed: list[str]
    remaining: list[str]
    refused: list[str]


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_event(event: Any, model: type[ModelT], what: str) -> ModelT:
    """Parse ``event`` with Powertools' parser; a bad field becomes one InvalidInput."""
    if not isinstance(event, dict):
        raise InvalidInput(f"invalid {what}: expected a JSON object, got {type(event).__name__}")
    try:
        return parse(event=event, model=model)
    except ValidationError as exc:
        raise InvalidInput.from_pydantic(what, exc.errors()) from None
