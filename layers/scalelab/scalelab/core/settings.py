"""Function configuration read from the environment.

Each model is validated once, at cold start, so a missing or malformed
variable fails loudly at init instead of surfacing as ``None`` mid-run.
template.yaml sets these variables from its Parameters.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Network, ip_network
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], BeforeValidator(_split_commas)]


class ConfigurationError(RuntimeError):
    """The function's environment is missing or has a malformed variable."""


class EnvModel(BaseModel):
    """Base of a function's settings: fields aliased to environment variable names.

    Each is built when first read (``defer_build``): a function reads one or two of them.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    @classmethod
    def from_env(cls) -> Self:
        try:
            return cls.model_validate(dict(os.environ))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(
                f"{cls.__name__} environment is invalid ({problems}); "
                "set these variables in template.yaml or the test environment"
            ) from None


class TableSettings(EnvModel):
    """Where runs, ledgers and locks are stored (every function)."""

    table_name: str = Field(alias="TABLE_NAME", min_length=3)
    run_record_ttl_days: int = Field(alias="RUN_RECORD_TTL_DAYS", ge=1)


class RunDefaults(EnvModel):
    """Defaults and limits for run input (Prepare); each comes from a template Parameter."""

    lab_name: str = Field(alias="DEFAULT_LAB_NAME")
    instance_type: str = Field(alias="DEFAULT_INSTANCE_TYPE")
    allowed_instance_types: CommaList = Field(alias="ALLOWED_INSTANCE_TYPES", min_length=1)
    min_size: int = Field(alias="DEFAULT_MIN_SIZE")
    desired_capacity: int = Field(alias="DEFAULT_DESIRED_CAPACITY")
    max_size: int = Field(alias="DEFAULT_MAX_SIZE")
    max_size_cap: int = Field(alias="MAX_SIZE_CAP", ge=1)
    app_port: int = Field(alias="DEFAULT_APP_PORT")
    health_path: str = Field(alias="DEFAULT_HEALTH_PATH")
    cpu_target_percent: float = Field(alias="DEFAULT_CPU_TARGET_PERCENT")
    network_in_target_bytes: float = Field(alias="DEFAULT_NETWORK_IN_TARGET_BYTES")
    network_out_target_bytes: float = Field(alias="DEFAULT_NETWORK_OUT_TARGET_BYTES")
    request_count_target: float = Field(alias="DEFAULT_REQUEST_COUNT_TARGET")
    subnet_ids: CommaList = Field(alias="DEFAULT_SUBNET_IDS", default_factory=list)
    stress_seconds: int = Field(alias="DEFAULT_STRESS_SECONDS")
    stress_seconds_cap: int = Field(alias="STRESS_SECONDS_CAP", ge=1)
    healthy_within_seconds: int = Field(alias="DEFAULT_HEALTHY_WITHIN_SECONDS")
    scale_out_within_seconds: int = Field(alias="DEFAULT_SCALE_OUT_WITHIN_SECONDS")
    new_instance_healthy_within_seconds: int = Field(alias="DEFAULT_NEW_INSTANCE_HEALTHY_WITHIN_SECONDS")
    poll_seconds: int = Field(alias="DEFAULT_POLL_SECONDS")
    lock_lease_seconds: int = Field(alias="LOCK_LEASE_SECONDS", ge=60)
    run_deadlines_cap_seconds: int = Field(alias="RUN_DEADLINES_CAP_SECONDS", ge=3, le=13_800)


def defaults_of(info: ValidationInfo) -> RunDefaults:
    """The run defaults the caller validated with (``context=RunDefaults``)."""
    if not isinstance(info.context, RunDefaults):
        raise TypeError("validate the run input with context=RunDefaults (the Prepare function's settings)")
    return info.context


class ProvisionSettings(EnvModel):
    """Account-level choices for the lab's resources (Provision)."""

    alb_ingress_cidr: str = Field(alias="ALB_INGRESS_CIDR")
    ami_id: str = Field(alias="AMI_ID", default="", pattern=r"^(ami-[0-9a-f]{8,17})?$")
    ami_ssm_parameter: str = Field(alias="AMI_SSM_PARAMETER", min_length=1)
    instance_profile_arn: str = Field(alias="INSTANCE_PROFILE_ARN", min_length=1)


class JanitorSettings(EnvModel):
    """Which executions are the lab's, and how old a run must be before a sweep may touch it."""

    state_machine_arn: str = Field(
        alias="LAB_STATE_MACHINE_ARN", pattern=r"^arn:aws[a-z-]*:states:.+:stateMachine:.+"
    )
    grace_seconds: int = Field(alias="JANITOR_GRACE_SECONDS", ge=0, le=604_800)
    # The cleanup state machine waits this long between teardown passes.
    cleanup_poll_seconds: int = Field(alias="CLEANUP_POLL_SECONDS", ge=1, le=3600)
    lock_lease_seconds: int = Field(alias="LOCK_LEASE_SECONDS", ge=60)
    # Load executions cannot be tagged: the sweep lists this machine's running executions instead.
    load_state_machine_arn: str = Field(
        alias="LOAD_STATE_MACHINE_ARN", pattern=r"^arn:aws[a-z-]*:states:.+:stateMachine:.+"
    )


class LoadSettings(EnvModel):
    """The load state machine and the caps on the load it runs (StartStress); each a template Parameter."""

    state_machine_arn: str = Field(
        alias="LOAD_STATE_MACHINE_ARN", pattern=r"^arn:aws[a-z-]*:states:.+:stateMachine:.+"
    )
    requests_per_second_cap: float = Field(alias="LOAD_REQUESTS_PER_SECOND_CAP", gt=0, le=10_000)
    bytes_per_second_cap: float = Field(alias="LOAD_BYTES_PER_SECOND_CAP", gt=0, le=1_000_000_000)
    workers_cap: int = Field(alias="LOAD_WORKERS_CAP", ge=1, le=100)
    round_seconds: int = Field(alias="LOAD_ROUND_SECONDS", ge=1, le=600)


# The probe's function has a 120 s Lambda timeout. The requests may use 100 s of it;
# the rest is for the cold start, name resolution (which no socket timeout bounds)
# and returning the result.
PROBE_LAMBDA_TIMEOUT_SECONDS = 120
PROBE_BUDGET_SECONDS = 100.0


class ProbeSettings(EnvModel):
    """How hard the probe looks; each value comes from a template Parameter."""

    requests: int = Field(alias="PROBE_REQUESTS", ge=1, le=200)
    success_ratio: float = Field(alias="PROBE_SUCCESS_RATIO", gt=0, le=1)
    timeout_seconds: float = Field(alias="PROBE_TIMEOUT_SECONDS", gt=0)
    # The range the load balancer admits (AlbIngressCidr): the probe comes from Lambda's public
    # addresses, so a narrower range explains a probe that only times out.
    alb_ingress_cidr: IPv4Network = Field(alias="ALB_INGRESS_CIDR")

    @field_validator("alb_ingress_cidr", mode="before")
    @classmethod
    def _network_of(cls, value: object) -> object:
        # The Parameter's pattern admits host bits (10.0.0.5/24): the range is still its network's.
        return ip_network(value, strict=False) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fits_the_lambda_timeout(self) -> Self:
        worst_case = self.requests * self.timeout_seconds
        if worst_case > PROBE_BUDGET_SECONDS:
            raise ValueError(
                f"PROBE_REQUESTS x PROBE_TIMEOUT_SECONDS = {self.requests} x {self.timeout_seconds:g} s "
                f"= {worst_case:g} s, above the {PROBE_BUDGET_SECONDS:g} s the probe may take within "
                f"its function's {PROBE_LAMBDA_TIMEOUT_SECONDS} s timeout; lower one of them"
            )
        return self


# SigV4 signs a URL for at most seven days.
PRESIGNED_URL_MAX_SECONDS = 604_800


class ReportSettings(EnvModel):
    """Where Judge writes the run's report, and how long the notification's link to it works."""

    reports_bucket: str = Field(alias="REPORTS_BUCKET", min_length=3)
    # The template's ReportLinkExpirySeconds; a URL signed with a Lambda role's temporary
    # credentials stops working when they expire, if that comes first.
    report_link_expiry_seconds: int = Field(
        alias="REPORT_LINK_EXPIRY_SECONDS", default=43_200, ge=60, le=PRESIGNED_URL_MAX_SECONDS
    )
