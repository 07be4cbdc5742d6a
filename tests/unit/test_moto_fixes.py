"""moto where the rehearsal corrects it (scalelab_rehearsal.moto_fixes): PutScalingPolicy answers
the policy's ARN, policies belong to their group and have target tracking's alarms, alarms keep their
history, an instance's console is its own, a template's role gets its managed policies, the default VPC
routes to its internet gateway, and a load balancer refuses two subnets in one zone, as in AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from scalelab_rehearsal import moto_fixes

GROUPS = ("scalelab-lab-a", "scalelab-lab-b")
POLICY = "cpu-target"


@pytest.fixture(autouse=True)
def _moto_as_in_aws() -> Iterator[None]:
    undo = moto_fixes.install()
    yield
    undo()


@pytest.fixture
def autoscaling(account: None) -> Any:
    """Two groups in the emulated account."""
    template = boto3.client("ec2").create_launch_template(
        LaunchTemplateName="lab", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    client = boto3.client("autoscaling")
    for group in GROUPS:
        client.create_auto_scaling_group(
            AutoScalingGroupName=group,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=2,
            AvailabilityZones=["us-east-1a"],
        )
    return client


def put_cpu_policy(autoscaling: Any, group: str, target: float, name: str = POLICY) -> dict[str, Any]:
    answer: dict[str, Any] = autoscaling.put_scaling_policy(
        AutoScalingGroupName=group,
        PolicyName=name,
        PolicyType="TargetTrackingScaling",
        TargetTrackingConfiguration={
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
            "TargetValue": target,
        },
    )
    return answer


def policies_of(autoscaling: Any, group: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = autoscaling.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]
    return found


def test_put_scaling_policy_answers_the_policys_arn(autoscaling: Any) -> None:
    answer = put_cpu_policy(autoscaling, GROUPS[0], 50.0)

    (policy,) = policies_of(autoscaling, GROUPS[0])
    assert answer["PolicyARN"] == policy["PolicyARN"]
    assert answer["PolicyARN"].startswith("arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:")
    assert answer["PolicyARN"].endswith(f":autoScalingGroupName/{GROUPS[0]}:policyName/{POLICY}")


def test_two_groups_keep_their_own_policy_of_the_same_name(autoscaling: Any) -> None:
    first = put_cpu_policy(autoscaling, GROUPS[0], 40.0)["PolicyARN"]
    second = put_cpu_policy(autoscaling, GROUPS[1], 70.0)["PolicyARN"]

    assert first != second
    for group, arn, target in ((GROUPS[0], first, 40.0), (GROUPS[1], second, 70.0)):
        (policy,) = policies_of(autoscaling, group)
        assert policy["PolicyARN"] == arn
        assert policy["TargetTrackingConfiguration"]["TargetValue"] == target
    assert len(autoscaling.describe_policies()["ScalingPolicies"]) == 2


def test_putting_a_groups_policy_again_updates_it(autoscaling: Any) -> None:
    first = put_cpu_policy(autoscaling, GROUPS[0], 40.0)["PolicyARN"]

    again = put_cpu_policy(autoscaling, GROUPS[0], 60.0)["PolicyARN"]

    (policy,) = policies_of(autoscaling, GROUPS[0])
    assert again == first
    assert policy["TargetTrackingConfiguration"]["TargetValue"] == 60.0


def test_delete_policy_by_name_deletes_only_that_groups_policy(autoscaling: Any) -> None:
    put_cpu_policy(autoscaling, GROUPS[0], 40.0)
    kept = put_cpu_policy(autoscaling, GROUPS[1], 70.0)["PolicyARN"]

    autoscaling.delete_policy(AutoScalingGroupName=GROUPS[0], PolicyName=POLICY)

    assert policies_of(autoscaling, GROUPS[0]) == []
    assert [policy["PolicyARN"] for policy in policies_of(autoscaling, GROUPS[1])] == [kept]


def test_delete_policy_by_arn_deletes_that_policy(autoscaling: Any) -> None:
    gone = put_cpu_policy(autoscaling, GROUPS[0], 40.0)["PolicyARN"]
    put_cpu_policy(autoscaling, GROUPS[1], 70.0)

    autoscaling.delete_policy(PolicyName=gone)

    assert policies_of(autoscaling, GROUPS[0]) == []
    assert len(policies_of(autoscaling, GROUPS[1])) == 1


def test_deleting_a_group_deletes_its_policies(autoscaling: Any) -> None:
    put_cpu_policy(autoscaling, GROUPS[0], 40.0, name="first")
    put_cpu_policy(autoscaling, GROUPS[1], 70.0, name="second")

    autoscaling.delete_auto_scaling_group(AutoScalingGroupName=GROUPS[0], ForceDelete=True)

    assert [
        policy["AutoScalingGroupName"] for policy in autoscaling.describe_policies()["ScalingPolicies"]
    ] == [GROUPS[1]]


def test_execute_policy_acts_on_the_named_groups_policy(autoscaling: Any) -> None:
    for group in GROUPS:
        autoscaling.put_scaling_policy(
            AutoScalingGroupName=group,
            PolicyName="add-one",
            PolicyType="SimpleScaling",
            AdjustmentType="ChangeInCapacity",
            ScalingAdjustment=1,
        )

    autoscaling.execute_policy(AutoScalingGroupName=GROUPS[0], PolicyName="add-one")

    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=list(GROUPS))["AutoScalingGroups"]
    assert {group["AutoScalingGroupName"]: group["DesiredCapacity"] for group in groups} == {
        GROUPS[0]: 1,
        GROUPS[1]: 0,
    }


def test_a_templates_role_gets_the_templates_own_managed_policy(account: None) -> None:
    # moto's CloudFormation dropped ManagedPolicyArns, so the shared delete policy reached no role.
    template = {
        "Resources": {
            "Shared": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "ec2:DeleteSecurityGroup", "Resource": "*"}
                        ],
                    }
                },
            },
            "Worker": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []},
                    "ManagedPolicyArns": [{"Ref": "Shared"}],
                },
            },
        }
    }
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="roles", TemplateBody=json.dumps(template))
    resources = {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for resource in cloudformation.describe_stack_resources(StackName="roles")["StackResources"]
    }

    attached = boto3.client("iam").list_attached_role_policies(RoleName=resources["Worker"])

    assert [policy["PolicyArn"] for policy in attached["AttachedPolicies"]] == [resources["Shared"]]


def test_a_templates_kms_key_answers_with_its_policy_document(account: None) -> None:
    # moto's CloudFormation kept the policy as an object: every KMS call on the key failed.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    template = {"Resources": {"TopicKey": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": policy}}}}
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="keys", TemplateBody=json.dumps(template))
    key_id = cloudformation.describe_stack_resources(StackName="keys")["StackResources"][0][
        "PhysicalResourceId"
    ]
    kms = boto3.client("kms")

    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
    assert json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]) == policy


def test_the_default_vpc_routes_to_the_internet_through_its_gateway(account: None) -> None:
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    gateways = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]

    gateway = gateways["InternetGateways"][0]["InternetGatewayId"]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": gateway} in [
        {key: route[key] for key in ("DestinationCidrBlock", "GatewayId") if key in route}
        for route in main["Routes"]
    ]


def test_a_load_balancer_refuses_two_subnets_in_one_zone(account: None) -> None:
    ec2 = boto3.client("ec2")
    default = {subnet["AvailabilityZone"]: subnet for subnet in ec2.describe_subnets()["Subnets"]}
    second = ec2.create_subnet(
        VpcId=default["us-east-1a"]["VpcId"], CidrBlock="172.31.128.0/20", AvailabilityZone="us-east-1a"
    )["Subnet"]["SubnetId"]
    elbv2 = boto3.client("elbv2")

    with pytest.raises(elbv2.exceptions.ClientError) as caught:
        elbv2.create_load_balancer(
            Name="same-zone",
            Subnets=[default["us-east-1a"]["SubnetId"], second, default["us-east-1b"]["SubnetId"]],
        )

    assert caught.value.response["Error"]["Code"] == "InvalidConfigurationRequest"
    assert caught.value.response["Error"]["Message"] == (
        "A load balancer cannot be attached to multiple subnets in the same Availability Zone"
    )
    assert elbv2.describe_load_balancers()["LoadBalancers"] == []
    created = elbv2.create_load_balancer(
        Name="two-zones", Subnets=[default["us-east-1a"]["SubnetId"], default["us-east-1b"]["SubnetId"]]
    )
    assert created["LoadBalancers"][0]["LoadBalancerName"] == "two-zones"


def alarms_of(autoscaling: Any, group: str) -> list[str]:
    return [alarm["AlarmName"] for policy in policies_of(autoscaling, group) for alarm in policy["Alarms"]]


def test_a_target_tracking_policy_has_its_two_alarms_as_aws_names_them(autoscaling: Any) -> None:
    put_cpu_policy(autoscaling, GROUPS[0], 50.0)
    put_cpu_policy(autoscaling, GROUPS[0], 50.0)  # a repeated put keeps the policy's alarms

    names = alarms_of(autoscaling, GROUPS[0])

    assert [name.rsplit("-", 5)[0] for name in names] == [
        f"TargetTracking-{GROUPS[0]}-AlarmHigh",
        f"TargetTracking-{GROUPS[0]}-AlarmLow",
    ]
    alarms = boto3.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]
    assert {alarm["StateValue"] for alarm in alarms} == {"INSUFFICIENT_DATA"}
    assert len(boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]) == 2
    high = next(alarm for alarm in alarms if "-AlarmHigh-" in alarm["AlarmName"])
    assert (high["Threshold"], high["EvaluationPeriods"]) == (50.0, 3)
    assert high["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": GROUPS[0]}]


def test_deleting_the_policy_or_its_group_deletes_its_alarms(autoscaling: Any) -> None:
    for group in GROUPS:
        put_cpu_policy(autoscaling, group, 50.0)
    cloudwatch = boto3.client("cloudwatch")

    autoscaling.delete_policy(AutoScalingGroupName=GROUPS[0], PolicyName=POLICY)
    assert {alarm["AlarmName"] for alarm in cloudwatch.describe_alarms()["MetricAlarms"]} == set(
        alarms_of(autoscaling, GROUPS[1])
    )
    autoscaling.delete_auto_scaling_group(AutoScalingGroupName=GROUPS[1], ForceDelete=True)
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []


def test_an_alarms_state_changes_are_its_history(autoscaling: Any) -> None:
    put_cpu_policy(autoscaling, GROUPS[0], 50.0)
    high = alarms_of(autoscaling, GROUPS[0])[0]
    cloudwatch = boto3.client("cloudwatch")
    for state in ("OK", "OK", "ALARM"):
        cloudwatch.set_alarm_state(AlarmName=high, StateValue=state, StateReason=f"now {state}")

    items = cloudwatch.describe_alarm_history(AlarmName=high, HistoryItemType="StateUpdate")[
        "AlarmHistoryItems"
    ]

    assert [item["HistorySummary"] for item in items] == [
        "Alarm updated from OK to ALARM",
        "Alarm updated from INSUFFICIENT_DATA to OK",
    ]
    assert json.loads(items[0]["HistoryData"])["newState"] == {
        "stateValue": "ALARM",
        "stateReason": "now ALARM",
    }
    oldest_first = cloudwatch.describe_alarm_history(
        AlarmName=high, ScanBy="TimestampAscending", MaxRecords=1
    )
    assert [item["HistorySummary"] for item in oldest_first["AlarmHistoryItems"]] == [
        "Alarm updated from INSUFFICIENT_DATA to OK"
    ]


def test_an_instance_console_is_what_the_world_wrote_there(account: None) -> None:
    ec2 = boto3.client("ec2")
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_instance(instance).__dict__["console_output"] = (
        "booted\n"
    )

    # botocore decodes the base64 AWS sends.
    assert ec2.get_console_output(InstanceId=instance)["Output"] == "booted\n"
