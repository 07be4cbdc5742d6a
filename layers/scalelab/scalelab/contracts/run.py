"""The run input a person sends, and the run config Prepare makes of it for every later state.

The input's defaults and limits come from the Prepare function's settings
(template Parameters), passed in as the validation context: models never read
the environment themselves.
"""

from __future__ import annotations

import re
from copy import copy
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from scalelab.contracts.base import (
    LAB_NAME_PATTERN,
    SUBNET_ID_PATTERN,
    VPC_ID_PATTERN,
    InputModel,
    OutputModel,
    RunId,
    TimestampText,
)
from scalelab.contracts.scaling import Scaling, ScalingInput
from scalelab.core.naming import ResourceNames, resource_names, run_tags
from scalelab.core.settings import defaults_of

LabName = Annotated[str, Field(pattern=LAB_NAME_PATTERN)]
AppPort = Annotated[int, Field(ge=1024, le=65535)]
# No quote or shell-special character: the path is written into the instances' user data.
HealthPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]{0,1023}$")]
CpuPercent = Annotated[float, Field(gt=0, lt=100)]
# Target tracking's scale-out alarm fires after 3 one-minute datapoints above the target
# (detailed monitoring): a shorter stress can never scale the group out.
SCALE_OUT_ALARM_SECONDS = 180
# Its scale-in alarm (AlarmLow) wants 15 one-minute datapoints below the target: a scale-in
# deadline shorter than this fails on AWS (the rehearsal's compressed clock may use less).
SCALE_IN_ALARM_SECONDS = 900


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


def _with_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """``data`` with every field it leaves out taken from ``defaults`` (anything else is left to
    validation, which names what is wrong)."""
    return {**defaults, **data} if isinstance(data, dict) else data


def _at_most(value: int, cap: int, parameter: str) -> int:
    if value > cap:
        raise ValueError(f"{value} is above the {parameter} Parameter ({cap})")
    return value


class SectionInput(InputModel):
    """A section of the run input whose missing fields take the template's defaults.

    ``DEFAULTS`` maps each field to the RunDefaults attribute (a template Parameter) it defaults to.
    """

    DEFAULTS: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        defaults = defaults_of(info)
        # Copied, so no run's input can change the list the defaults hold.
        return _with_defaults(
            data, {field: copy(getattr(defaults, name)) for field, name in cls.DEFAULTS.items()}
        )


# ---- the run input ------------------------------------------------------------------------


class LaunchTemplateRef(InputModel):
    """A launch template the user owns; scalelab uses it as given and never changes it."""

    name: str = Field(min_length=3, max_length=128, pattern=r"^[a-zA-Z0-9()./_-]+$")
    version: str = Field(default="$Default", pattern=r"^(\$Latest|\$Default|[1-9][0-9]*)$")


# MaxSizeCap's own MaxValue in template.yaml: no lab is bigger, however the state was reached.
GROUP_SIZE_LIMIT = 100


class LabShape(BaseModel):
    """What a lab is, as a person asks for it and as Prepare resolves it (same rules in both)."""

    model_config = ConfigDict(defer_build=True)  # as every contract (contracts/base.py)

    name: LabName
    instance_type: str = Field(min_length=1)
    min_size: int = Field(ge=0, le=GROUP_SIZE_LIMIT)
    desired_capacity: int = Field(ge=1, le=GROUP_SIZE_LIMIT)
    max_size: int = Field(ge=1, le=GROUP_SIZE_LIMIT)
    app_port: AppPort
    health_path: HealthPath


class LabInput(SectionInput, LabShape):
    DEFAULTS: ClassVar[dict[str, str]] = {
        "name": "lab_name",
        "instance_type": "instance_type",
        "min_size": "min_size",
        "desired_capacity": "desired_capacity",
        "max_size": "max_size",
        "app_port": "app_port",
        "health_path": "health_path",
        "subnet_ids": "subnet_ids",
    }

    subnet_ids: list[str]
    launch_template: LaunchTemplateRef | None = None
    scaling: ScalingInput
    # The input before lab.scaling: a cpu target alone, still taken as {"metric": "cpu", "target": it}.
    cpu_target_percent: CpuPercent | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _scaling_from_cpu_target(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        cpu_target = data.get("cpu_target_percent")
        if "scaling" in data:
            if cpu_target is not None:
                raise ValueError(
                    "lab.cpu_target_percent and lab.scaling both set a target; "
                    'give only lab.scaling, e.g. {"metric": "cpu", "target": 50}'
                )
            return data
        scaling = {} if cpu_target is None else {"metric": "cpu", "target": cpu_target}
        return {**data, "scaling": scaling}

    @field_validator("instance_type")
    @classmethod
    def _instance_type_allowed(cls, value: str, info: ValidationInfo) -> str:
        allowed = defaults_of(info).allowed_instance_types
        if value not in allowed:
            raise ValueError(
                f"{value!r} is not in the allowed instance types ({', '.join(allowed)}); "
                "pick one of those or widen the AllowedInstanceTypes Parameter"
            )
        return value

    @field_validator("max_size")
    @classmethod
    def _max_size_capped_and_above_the_others(cls, value: int, info: ValidationInfo) -> int:
        # A field validator, not a model one: pydantic skips model validators once any field
        # failed, and the sizes must be named together with every other bad field. The fields
        # before this one are in info.data when they were valid.
        min_size, desired = info.data.get("min_size"), info.data.get("desired_capacity")
        if min_size is not None and desired is not None:
            check_group_sizes(min_size, desired, value)
        return _at_most(value, defaults_of(info).max_size_cap, "MaxSizeCap")

    @field_validator("subnet_ids")
    @classmethod
    def _subnet_ids_well_formed(cls, value: list[str]) -> list[str]:
        bad = [subnet for subnet in value if not re.fullmatch(SUBNET_ID_PATTERN, subnet)]
        if bad:
            raise ValueError(f"not subnet ids: {', '.join(map(repr, bad))}")
        if len(set(value)) != len(value):
            raise ValueError("lists a subnet more than once")
        return value


class StressInput(SectionInput):
    DEFAULTS: ClassVar[dict[str, str]] = {"duration_seconds": "stress_seconds"}

    duration_seconds: int

    @field_validator("duration_seconds")
    @classmethod
    def _duration_within_reason(cls, value: int, info: ValidationInfo) -> int:
        if value < SCALE_OUT_ALARM_SECONDS:
            raise ValueError(
                f"{value} s is shorter than target tracking's scale-out alarm needs to fire "
                f"({SCALE_OUT_ALARM_SECONDS} s: 3 one-minute datapoints above the target), so the "
                f"group could never scale out; stress for at least {SCALE_OUT_ALARM_SECONDS} s"
            )
        return _at_most(value, defaults_of(info).stress_seconds_cap, "StressDurationCapSeconds")


class ExpectationsInput(SectionInput):
    DEFAULTS: ClassVar[dict[str, str]] = {
        "healthy_within_seconds": "healthy_within_seconds",
        "scale_out_within_seconds": "scale_out_within_seconds",
        "new_instance_healthy_within_seconds": "new_instance_healthy_within_seconds",
    }

    healthy_within_seconds: int = Field(ge=1, le=86_400)
    scale_out_within_seconds: int = Field(ge=1, le=86_400)
    new_instance_healthy_within_seconds: int = Field(ge=1, le=86_400)
    # Absent (the default): the run does not wait for the scale-in. Set, the run stops the load
    # after the scale-out and waits this long for the group to shrink back; on AWS that takes
    # at least SCALE_IN_ALARM_SECONDS, and the instances stay up (and cost) meanwhile.
    scale_in_within_seconds: int | None = Field(default=None, ge=1, le=86_400)

    @model_validator(mode="after")
    def _deadlines_fit_the_run(self, info: ValidationInfo) -> Self:
        # Past the deadlines the run still stresses, judges and tears down, all before the
        # state machine's own 4-hour timeout, which the cap keeps room for.
        deadlines = [
            self.healthy_within_seconds,
            self.scale_out_within_seconds,
            self.new_instance_healthy_within_seconds,
        ]
        if self.scale_in_within_seconds is not None:
            deadlines.append(self.scale_in_within_seconds)
        total = sum(deadlines)
        cap = defaults_of(info).run_deadlines_cap_seconds
        if total > cap:
            raise ValueError(
                f"the {len(deadlines)} deadlines add up to {total} s, above the RunDeadlinesCapSeconds "
                f"Parameter ({cap} s); shorten them or raise the Parameter"
            )
        return self


class TimingInput(SectionInput):
    DEFAULTS: ClassVar[dict[str, str]] = {"poll_seconds": "poll_seconds"}

    poll_seconds: int = Field(ge=1, le=3600)


class RunInput(InputModel):
    """What a person passes to ``start-execution``; every field is optional.

    Validate it with ``context=RunDefaults``: the defaults and limits are the template's Parameters.
    """

    lab: LabInput
    stress: StressInput
    expectations: ExpectationsInput
    timing: TimingInput

    @model_validator(mode="before")
    @classmethod
    def _every_section(cls, data: Any) -> Any:
        return _with_defaults(data, {"lab": {}, "stress": {}, "expectations": {}, "timing": {}})


class PrepareEvent(InputModel):
    """What the state machine hands Prepare: the execution's name and its raw input."""

    execution_name: str = Field(min_length=1, max_length=80)
    # Any JSON value: Prepare rejects what is not an object itself, so the rejection is recorded.
    input: Any = Field(default_factory=dict)


# ---- what Prepare hands the later states -------------------------------------------


class LabConfig(OutputModel, LabShape):
    """The lab as Prepare resolved it. Provision builds exactly this, so it is checked again here."""

    # A load balancer needs subnets in two availability zones (Prepare checked which).
    subnet_ids: list[Annotated[str, Field(pattern=SUBNET_ID_PATTERN)]] = Field(min_length=2)
    vpc_id: str = Field(pattern=VPC_ID_PATTERN)
    launch_template: LaunchTemplateRef | None = None
    scaling: Scaling
    # The subnets Prepare left out, with why (their zone does not offer the instance type):
    # the report keeps them, so a run on fewer zones than asked for says so.
    dropped_subnets: dict[str, str] = Field(default_factory=dict)

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
    # None: the run does not wait for the scale-in (the state machine's ScaleIn? tests for null).
    scale_in_within_seconds: int | None = None


class TimingConfig(OutputModel):
    poll_seconds: int


class RunConfig(OutputModel):
    """The normalised run: every later state reads this, never the raw input.

    Names and tags are derived from the run id, so any others are not a
    config Prepare made: resources tagged for another run would be created
    and then refused by this run's teardown.
    """

    run_id: RunId
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
        if run_id is None or lab is None:
            return value
        expected = run_tags(run_id, lab.name)
        if value != expected:
            wrong = sorted(key for key in {*value, *expected} if value.get(key) != expected.get(key))
            raise ValueError(
                f"are not the tags Prepare derives from run_id {run_id!r} and lab.name {lab.name!r} "
                f"({expected}); these keys differ: {', '.join(wrong)}; pass the config Prepare "
                "returned, unchanged"
            )
        return value
