"""The kinds of resource a run creates, and a typed reference to one of them."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Kind(StrEnum):
    """A kind of resource; the value is its key in the run's ledger."""

    ALB_SECURITY_GROUP = "alb_security_group"
    INSTANCE_SECURITY_GROUP = "instance_security_group"
    # A security group found by its tag alone (the janitor), where which of the two it was is unknown.
    SECURITY_GROUP = "security_group"
    LAUNCH_TEMPLATE = "launch_template"
    TARGET_GROUP = "target_group"
    LOAD_BALANCER = "load_balancer"
    LISTENER = "listener"
    AUTO_SCALING_GROUP = "auto_scaling_group"
    # The load state machine's execution (its ARN) of a network or request signal; it has no tags.
    LOAD_EXECUTION = "load_execution"
    # An instance outside any group (its group is gone): found by the janitor, never in a ledger.
    INSTANCE = "instance"


class ResourceRef(BaseModel):
    """One resource: its kind and its id (or ARN, for the load balancer's kinds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    kind: Kind
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"
