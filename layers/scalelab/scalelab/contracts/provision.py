"""What Provision hands the later states."""

from __future__ import annotations

from scalelab.contracts.base import OutputModel, TimestampText


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
