"""Names and tags of everything a run creates, decided in one place.

Every name starts with ``scalelab-`` (the Auto Scaling event rule and the IAM
policies rely on that prefix) and fits the AWS limit of its resource type.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict

PREFIX = "scalelab-"
RUN_TAG = "scalelab:run"
LAB_TAG = "scalelab:lab"

RUN_ID_MAX = 64
# Load balancer and target group names: at most 32 characters, alphanumerics
# and hyphens, no leading or trailing hyphen.
ELB_NAME_MAX = 32


class ResourceNames(BaseModel):
    """Physical names of the run's resources, derived once in Prepare."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    alb_security_group: str
    instance_security_group: str
    launch_template: str
    target_group: str
    load_balancer: str
    auto_scaling_group: str
    # Unique per run: two labs' policies never share a name, in any account.
    scaling_policy: str
    # The load state machine's execution (network and request signals). Executions cannot be
    # tagged: this name, derived from the run id, is how teardown and the janitor know it.
    load_execution: str


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_id_from_execution(execution_name: str) -> str:
    """A stable, lowercase run id derived from the Step Functions execution name.

    The same execution name always gives the same id, so a retried Prepare
    finds the run it already recorded. Execution names are case-sensitive, so
    a name that is not already its own lowercase, hyphenated form gets a hash
    of its exact spelling: ``Victim-X`` and ``victim-X`` are two runs.
    """
    cleaned = re.sub(r"[^a-z0-9]+", "-", execution_name.lower()).strip("-")
    if not cleaned:
        return f"run-{_digest(execution_name)}"
    if cleaned != execution_name or len(cleaned) > RUN_ID_MAX:
        # Two different execution names must not collide after cleaning.
        head = cleaned[: RUN_ID_MAX - 9].rstrip("-")
        return f"{head}-{_digest(execution_name)}"
    return cleaned


def elb_name(run_id: str) -> str:
    full = f"{PREFIX}{run_id}"
    if len(full) <= ELB_NAME_MAX:
        return full
    room = ELB_NAME_MAX - len(PREFIX) - 9
    return f"{PREFIX}{run_id[:room].rstrip('-')}-{_digest(run_id)}"


def resource_names(run_id: str) -> ResourceNames:
    return ResourceNames(
        alb_security_group=f"{PREFIX}{run_id}-alb",
        instance_security_group=f"{PREFIX}{run_id}-instances",
        launch_template=f"{PREFIX}{run_id}",
        target_group=elb_name(run_id),
        load_balancer=elb_name(run_id),
        auto_scaling_group=f"{PREFIX}{run_id}",
        scaling_policy=f"{PREFIX}{run_id}-target-tracking",
        load_execution=load_execution_name(run_id),
    )


LOAD_EXECUTION_SUFFIX = "-load"


def load_execution_name(run_id: str) -> str:
    """At most 78 characters (a run id has at most 64): within Step Functions' 80."""
    return f"{PREFIX}{run_id}{LOAD_EXECUTION_SUFFIX}"


def run_of_load_execution(execution_name: str) -> str | None:
    """The run id a load execution's name was derived from, or None for any other name."""
    if not (execution_name.startswith(PREFIX) and execution_name.endswith(LOAD_EXECUTION_SUFFIX)):
        return None
    run_id = execution_name[len(PREFIX) : -len(LOAD_EXECUTION_SUFFIX)]
    return run_id or None


def run_tags(run_id: str, lab_name: str) -> dict[str, str]:
    return {RUN_TAG: run_id, LAB_TAG: lab_name}


def as_tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """The ``[{"Key": ..., "Value": ...}]`` shape most AWS APIs take."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tag_dict(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tag_list or []}
