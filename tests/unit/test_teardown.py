"""Teardown: nothing tagged with the run is left, nothing else is touched, and it is safe to repeat."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.contracts.run import RunConfig
from scalelab.core.settings import ProvisionSettings
from scalelab.steps.provision import provision_lab
from scalelab.steps.teardown import teardown_lab
from scalelab.store.runs import RunTable
from tests.support.account import aws_fault, tagged_resources
from tests.unit.conftest import PrepareRun

RUN = "down-0001"


def test_teardown_removes_every_tagged_resource_and_releases_the_lab(
    lab: ProvisionResult, run_table: RunTable
) -> None:
    assert tagged_resources(RUN)

    result = teardown_lab(RUN, run_table)

    assert result.done is True
    assert result.remaining == []
    assert result.refused == []
    assert len(result.removed) == 7
    assert tagged_resources(RUN) == {}
    record = run_table.load_run(RUN)
    assert record is not None
    assert record.resources == {}
    assert record.torn_down_at is not None
    assert run_table.lock_holder("default") is None


def test_the_ledger_keeps_each_removed_resource_with_the_pass_that_removed_it(
    lab: ProvisionResult, run_table: RunTable
) -> None:
    with aws_fault("ec2", "DeleteSecurityGroup", "DependencyViolation", times=2):
        first = teardown_lab(RUN, run_table, now=1_000)
    second = teardown_lab(RUN, run_table, now=1_030)

    record = run_table.load_run(RUN)
    assert record is not None
    assert record.resources == {}
    assert {kind: entry.removed_at for kind, entry in record.removed.items()} == {
        **{ref.kind: 1_000 for ref in first.removed},
        **{ref.kind: 1_030 for ref in second.removed},
    }
    assert record.removed[Kind.AUTO_SCALING_GROUP].id == lab.auto_scaling_group_name
    assert record.removed[Kind.ALB_SECURITY_GROUP].id == lab.alb_security_group_id
    assert record.torn_down_at == 1_030


def test_the_order_follows_the_dependencies(lab: ProvisionResult, run_table: RunTable) -> None:
    result = teardown_lab(RUN, run_table)

    kinds = [ref.kind for ref in result.removed]
    assert kinds == [
        "auto_scaling_group",
        "listener",
        "load_balancer",
        "target_group",
        "launch_template",
        "instance_security_group",
        "alb_security_group",
    ]


def test_a_partial_lab_is_torn_down_completely(
    config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    with aws_fault("autoscaling", "CreateAutoScalingGroup", "InternalFailure"), pytest.raises(ClientError):
        provision_lab(config, provision_settings, run_table)
    assert set(tagged_resources(RUN)) == {
        "security_groups",
        "launch_templates",
        "target_groups",
        "load_balancers",
        "listeners",
    }

    result = teardown_lab(RUN, run_table)

    assert result.done is True
    assert tagged_resources(RUN) == {}
    assert run_table.lock_holder("default") is None


def test_a_security_group_still_in_use_is_reported_and_removed_on_a_later_pass(
    lab: ProvisionResult, run_table: RunTable
) -> None:
    with aws_fault("ec2", "DeleteSecurityGroup", "DependencyViolation", times=2):
        first = teardown_lab(RUN, run_table)

    assert first.done is False
    assert first.remaining == [
        ResourceRef(kind=Kind.INSTANCE_SECURITY_GROUP, id=lab.instance_security_group_id),
        ResourceRef(kind=Kind.ALB_SECURITY_GROUP, id=lab.alb_security_group_id),
    ]
    assert set(tagged_resources(RUN)) == {"security_groups"}
    assert run_table.lock_holder("default") == RUN

    second = teardown_lab(RUN, run_table)

    assert second.done is True
    assert second.removed == first.remaining
    assert tagged_resources(RUN) == {}
    assert run_table.lock_holder("default") is None


def test_a_group_still_deleting_is_waited_for_not_deleted_again(
    lab: ProvisionResult, run_table: RunTable
) -> None:
    with aws_fault("autoscaling", "DeleteAutoScalingGroup", "ScalingActivityInProgress"):
        first = teardown_lab(RUN, run_table)

    assert first.done is False
    assert ResourceRef(kind=Kind.AUTO_SCALING_GROUP, id=lab.auto_scaling_group_name) in first.remaining

    assert teardown_lab(RUN, run_table).done is True
    assert tagged_resources(RUN) == {}


def test_a_resource_not_tagged_for_the_run_is_refused(
    config: RunConfig, run_table: RunTable, prepare: PrepareRun
) -> None:
    ec2 = boto3.client("ec2")
    bystander = ec2.create_security_group(
        GroupName="bystander", Description="not ours", VpcId=config.lab.vpc_id
    )
    other_run = ec2.create_security_group(
        GroupName="other-run",
        Description="another run's",
        VpcId=config.lab.vpc_id,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "scalelab:run", "Value": "other"}]}
        ],
    )
    run_table.record_resource(RUN, "alb_security_group", bystander["GroupId"])
    run_table.record_resource(RUN, "instance_security_group", other_run["GroupId"])

    result = teardown_lab(RUN, run_table)

    assert result.done is True
    assert set(result.refused) == {
        ResourceRef(kind=Kind.ALB_SECURITY_GROUP, id=bystander["GroupId"]),
        ResourceRef(kind=Kind.INSTANCE_SECURITY_GROUP, id=other_run["GroupId"]),
    }
    still_there = ec2.describe_security_groups(GroupIds=[bystander["GroupId"], other_run["GroupId"]])
    assert len(still_there["SecurityGroups"]) == 2


def test_teardown_twice_is_harmless(lab: ProvisionResult, run_table: RunTable) -> None:
    first = teardown_lab(RUN, run_table)
    second = teardown_lab(RUN, run_table)

    assert first.done is True
    assert second.done is True
    assert second.removed == []
    assert tagged_resources(RUN) == {}


def test_teardown_of_resources_already_gone_counts_them_removed(
    lab: ProvisionResult, run_table: RunTable
) -> None:
    boto3.client("autoscaling").delete_auto_scaling_group(
        AutoScalingGroupName=lab.auto_scaling_group_name, ForceDelete=True
    )
    boto3.client("elbv2").delete_load_balancer(LoadBalancerArn=lab.load_balancer_arn)

    result = teardown_lab(RUN, run_table)

    assert result.done is True
    assert tagged_resources(RUN) == {}


def test_teardown_of_a_run_that_created_nothing_is_harmless(config: RunConfig, run_table: RunTable) -> None:
    result = teardown_lab(RUN, run_table)

    assert result.done is True
    assert result.removed == []
    assert run_table.lock_holder("default") is None


def test_teardown_of_an_unknown_run_is_harmless(run_table: RunTable) -> None:
    result = teardown_lab("never-prepared", run_table)

    assert result.done is True
    assert result.removed == []


def test_teardown_leaves_the_users_launch_template(
    prepare: PrepareRun, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    mine = ec2.create_launch_template(
        LaunchTemplateName="kept-template", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]
    prepared = prepare("keeps-template", {"lab": {"launch_template": {"name": "kept-template"}}})
    provision_lab(prepared, provision_settings, run_table)

    result = teardown_lab("keeps-template", run_table)

    assert result.done is True
    assert tagged_resources("keeps-template") == {}
    kept = ec2.describe_launch_templates(LaunchTemplateIds=[mine["LaunchTemplateId"]])["LaunchTemplates"]
    assert [template["LaunchTemplateName"] for template in kept] == ["kept-template"]


def test_teardown_does_not_release_another_runs_lock(config: RunConfig, run_table: RunTable) -> None:
    run_table.release_lock("default", RUN)
    run_table.acquire_lock("default", "someone-else", lease_seconds=600, now=0)

    teardown_lab(RUN, run_table)

    assert run_table.lock_holder("default") == "someone-else"
