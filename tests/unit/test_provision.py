"""Provision: every resource exists, is configured as the lab needs, tagged and in the ledger."""

from __future__ import annotations

import base64

import boto3
import pytest
from botocore.exceptions import ClientError

from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.resources import Kind
from scalelab.contracts.run import RunConfig
from scalelab.core.errors import ForeignResource
from scalelab.core.naming import as_tag_list
from scalelab.core.settings import ProvisionSettings
from scalelab.steps.provision import provision_lab
from scalelab.store.runs import RunTable
from tests.support.account import aws_fault, tagged_resources
from tests.unit.conftest import PrepareRun

RUN = "prov-0001"
# What Provision makes: every kind but those only the janitor finds by tag, and the load
# execution StartStress starts.
LEDGER_KINDS = set(Kind) - {Kind.INSTANCE, Kind.SECURITY_GROUP, Kind.LOAD_EXECUTION}


def tags_of(tag_list: list[dict[str, str]]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tag_list}


def test_every_resource_is_tagged_and_in_the_ledger(lab: ProvisionResult, run_table: RunTable) -> None:
    record = run_table.load_run(RUN)
    assert record is not None
    assert record.resources == {
        "alb_security_group": lab.alb_security_group_id,
        "instance_security_group": lab.instance_security_group_id,
        "launch_template": lab.launch_template_id,
        "target_group": lab.target_group_arn,
        "load_balancer": lab.load_balancer_arn,
        "listener": lab.listener_arn,
        "auto_scaling_group": lab.auto_scaling_group_name,
    }
    assert set(record.resources) == LEDGER_KINDS
    left = tagged_resources(RUN)
    assert set(left["security_groups"]) == {lab.alb_security_group_id, lab.instance_security_group_id}
    assert left["launch_templates"] == [lab.launch_template_id]
    assert left["target_groups"] == [lab.target_group_arn]
    assert left["load_balancers"] == [lab.load_balancer_arn]
    assert left["listeners"] == [lab.listener_arn]
    assert left["auto_scaling_groups"] == [lab.auto_scaling_group_name]
    assert len(left["instances"]) == 2


def test_the_instances_accept_only_the_app_port_from_the_load_balancer(lab: ProvisionResult) -> None:
    ec2 = boto3.client("ec2")
    groups = {
        group["GroupId"]: group
        for group in ec2.describe_security_groups(
            GroupIds=[lab.alb_security_group_id, lab.instance_security_group_id]
        )["SecurityGroups"]
    }

    alb_rules = groups[lab.alb_security_group_id]["IpPermissions"]
    assert [(rule["FromPort"], rule["ToPort"], rule["IpRanges"][0]["CidrIp"]) for rule in alb_rules] == [
        (80, 80, "0.0.0.0/0")
    ]
    instance_rules = groups[lab.instance_security_group_id]["IpPermissions"]
    assert len(instance_rules) == 1
    assert (instance_rules[0]["FromPort"], instance_rules[0]["ToPort"]) == (3005, 3005)
    assert instance_rules[0]["IpRanges"] == []
    assert [pair["GroupId"] for pair in instance_rules[0]["UserIdGroupPairs"]] == [lab.alb_security_group_id]
    assert all(rule["FromPort"] != 22 for group in groups.values() for rule in group["IpPermissions"])


def test_the_launch_template_is_hardened(lab: ProvisionResult, provision_settings: ProvisionSettings) -> None:
    ec2 = boto3.client("ec2")
    data = ec2.describe_launch_template_versions(LaunchTemplateId=lab.launch_template_id)[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    al2023 = boto3.client("ssm").get_parameter(Name=provision_settings.ami_ssm_parameter)["Parameter"][
        "Value"
    ]

    assert data["ImageId"] == al2023
    assert data["InstanceType"] == "t3.micro"
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["Monitoring"] == {"Enabled": True}
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert data["IamInstanceProfile"]["Arn"] == provision_settings.instance_profile_arn
    assert data["SecurityGroupIds"] == [lab.instance_security_group_id]
    assert data["CreditSpecification"] == {"CpuCredits": "unlimited"}
    user_data = base64.b64decode(data["UserData"]).decode()
    assert user_data.startswith("#!/bin/bash")
    assert 'readonly APP_PORT="3005"' in user_data
    assert 'readonly HEALTH_PATH="/home"' in user_data
    assert "__SCALELAB_" not in user_data


def test_an_ami_parameter_overrides_the_ssm_lookup(
    config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    image = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    settings = provision_settings.model_copy(update={"ami_id": image})

    lab = provision_lab(config, settings, run_table)

    data = boto3.client("ec2").describe_launch_template_versions(LaunchTemplateId=lab.launch_template_id)[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    assert data["ImageId"] == image


def test_the_target_group_checks_health_fast(lab: ProvisionResult) -> None:
    group = boto3.client("elbv2").describe_target_groups(TargetGroupArns=[lab.target_group_arn])[
        "TargetGroups"
    ][0]

    assert (group["Protocol"], group["Port"]) == ("HTTP", 3005)
    assert group["HealthCheckPath"] == "/home"
    assert group["HealthCheckIntervalSeconds"] <= 10
    assert group["HealthyThresholdCount"] == 2


def test_the_load_balancer_is_internet_facing_in_two_zones(lab: ProvisionResult, config: RunConfig) -> None:
    elbv2 = boto3.client("elbv2")
    balancer = elbv2.describe_load_balancers(LoadBalancerArns=[lab.load_balancer_arn])["LoadBalancers"][0]
    listener = elbv2.describe_listeners(ListenerArns=[lab.listener_arn])["Listeners"][0]

    assert balancer["Scheme"] == "internet-facing"
    assert balancer["DNSName"] == lab.load_balancer_dns_name
    assert len({zone["ZoneName"] for zone in balancer["AvailabilityZones"]}) >= 2
    assert balancer["SecurityGroups"] == [lab.alb_security_group_id]
    assert (listener["Port"], listener["DefaultActions"][0]["TargetGroupArn"]) == (80, lab.target_group_arn)
    assert len(balancer["LoadBalancerName"]) <= 32
    assert balancer["LoadBalancerName"] == config.names.load_balancer


def test_the_group_uses_elb_health_and_scales_on_cpu(lab: ProvisionResult) -> None:
    autoscaling = boto3.client("autoscaling")
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[lab.auto_scaling_group_name])[
        "AutoScalingGroups"
    ][0]
    policy = autoscaling.describe_policies(AutoScalingGroupName=lab.auto_scaling_group_name)[
        "ScalingPolicies"
    ][0]

    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 2, 4)
    assert group["HealthCheckType"] == "ELB"
    assert group["TargetGroupARNs"] == [lab.target_group_arn]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == lab.launch_template_id
    assert all(tag["PropagateAtLaunch"] for tag in group["Tags"])
    assert tags_of(group["Tags"])["scalelab:run"] == RUN
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingConfiguration"]["TargetValue"] == 50.0
    instances = boto3.client("ec2").describe_instances(
        InstanceIds=[instance["InstanceId"] for instance in group["Instances"]]
    )["Reservations"]
    for reservation in instances:
        for instance in reservation["Instances"]:
            assert tags_of(instance["Tags"])["scalelab:run"] == RUN


def test_a_retry_after_a_partial_failure_reuses_what_exists(
    config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    with aws_fault("elbv2", "CreateLoadBalancer", "InternalFailure") as served, pytest.raises(ClientError):
        provision_lab(config, provision_settings, run_table)
    assert served == [1]
    half = run_table.load_run(RUN)
    assert half is not None
    assert set(half.resources) == {
        "alb_security_group",
        "instance_security_group",
        "launch_template",
        "target_group",
    }

    lab = provision_lab(config, provision_settings, run_table)

    left = tagged_resources(RUN)
    assert len(left["security_groups"]) == 2
    assert left["launch_templates"] == [lab.launch_template_id]
    assert left["target_groups"] == [lab.target_group_arn]
    assert left["load_balancers"] == [lab.load_balancer_arn]
    record = run_table.load_run(RUN)
    assert record is not None
    assert record.resources["alb_security_group"] == half.resources["alb_security_group"]
    assert set(record.resources) == LEDGER_KINDS


def test_provisioning_twice_creates_nothing_new(
    lab: ProvisionResult, config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    again = provision_lab(config, provision_settings, run_table)

    # The same resources; only the time of this call differs.
    assert again.model_dump(exclude={"provisioned_at"}) == lab.model_dump(exclude={"provisioned_at"})
    assert len(tagged_resources(RUN)["instances"]) == 2


def test_a_same_named_resource_of_another_run_is_not_adopted(
    config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    boto3.client("ec2").create_security_group(
        GroupName=config.names.alb_security_group, Description="someone else's", VpcId=config.lab.vpc_id
    )

    with pytest.raises(ForeignResource, match="not 'prov-0001'"):
        provision_lab(config, provision_settings, run_table)

    record = run_table.load_run(RUN)
    assert record is not None
    assert record.resources == {}


def test_a_planted_resource_with_the_runs_name_and_tag_is_not_adopted(
    config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    # Issue 15 #5: a group planted with the run's name and tag, SSH open to the world, was reused.
    ec2 = boto3.client("ec2")
    planted = ec2.create_security_group(
        GroupName=config.names.alb_security_group,
        Description="planted",
        VpcId=config.lab.vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": as_tag_list(config.tags)}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=planted,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )

    with pytest.raises(ForeignResource, match="never recorded"):
        provision_lab(config, provision_settings, run_table)

    record = run_table.load_run(RUN)
    assert record is not None
    assert record.resources == {}
    assert tagged_resources(RUN) == {"security_groups": [planted]}


def test_a_recorded_security_group_opened_since_is_not_reused(
    lab: ProvisionResult, config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    boto3.client("ec2").authorize_security_group_ingress(
        GroupId=lab.instance_security_group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )

    with pytest.raises(ForeignResource, match="port 22"):
        provision_lab(config, provision_settings, run_table)


def test_a_user_launch_template_is_used_as_given(
    prepare: PrepareRun, provision_settings: ProvisionSettings, run_table: RunTable
) -> None:
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    mine = ec2.create_launch_template(
        LaunchTemplateName="my-app-template",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.small"},
    )["LaunchTemplate"]
    config = prepare(
        "user-template", {"lab": {"launch_template": {"name": "my-app-template", "version": "1"}}}
    )

    lab = provision_lab(config, provision_settings, run_table)

    assert lab.launch_template_id == mine["LaunchTemplateId"]
    assert lab.launch_template_owned is False
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=mine["LaunchTemplateId"])
    assert len(versions["LaunchTemplateVersions"]) == 1
    record = run_table.load_run("user-template")
    assert record is not None
    assert "launch_template" not in record.resources
    group = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[lab.auto_scaling_group_name]
    )["AutoScalingGroups"][0]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == mine["LaunchTemplateId"]
