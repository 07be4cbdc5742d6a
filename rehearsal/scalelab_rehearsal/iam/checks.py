"""What IAM checks AWS makes for one API request: the action(s), each resource's ARN, and the
context keys, filled from the request and from the emulated account's current tags.

Sources: the Service Authorization Reference (actions, resource types, condition keys) and the
user guides for the implicit checks: tagging on create (EC2 "Grant permission to tag resources
during creation", ELB "Tag resources on creation"), launching from a launch template (Auto
Scaling "Control Amazon EC2 launch template use in Auto Scaling groups": ec2:RunInstances,
ec2:CreateTags for the template's TagSpecifications, iam:PassRole for its instance profile),
publishing to a topic encrypted with a customer managed key (SNS "Key management": the key's
kms:GenerateDataKey and kms:Decrypt).
A request with no entry here is checked as an action that takes no resource; one that does take
a resource then fails the check (see evaluate.mjs), so a call the rehearsal cannot describe is
never silently allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.autoscaling.models import autoscaling_backends
from moto.ec2.models import ec2_backends
from moto.elbv2.models import elbv2_backends
from moto.iam.models import iam_backends
from moto.kms.models import kms_backends
from moto.sns.models import sns_backends

from scalelab_rehearsal.iam.evaluator import Check

Context = dict[str, str | list[str]]

# The IAM service prefix of each SigV4 signing name that differs from it.
IAM_PREFIX = {"tagging": "tag", "monitoring": "cloudwatch"}
# REST operations, which carry no operation name: (method, signing name, path pattern) -> operation.
REST_OPERATIONS: tuple[tuple[str, str, re.Pattern[str], str], ...] = (
    ("POST", "lambda", re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$"), "Invoke"),
    ("PUT", "s3", re.compile(r"^/(?P<bucket>[^/]+)/(?P<key>.+)$"), "PutObject"),
    ("GET", "s3", re.compile(r"^/(?P<bucket>[^/]+)/(?P<key>.+)$"), "GetObject"),
)
# API operations whose IAM action has another name.
ACTION_NAMES = {("lambda", "Invoke"): "lambda:InvokeFunction"}


@dataclass(frozen=True)
class ApiRequest:
    """One request to the emulator, as the caller's SDK sent it."""

    service: str  # the SigV4 signing name
    operation: str
    # Query APIs: the flat form fields (TagSpecification.1.Tag.1.Key); JSON APIs: the document;
    # REST APIs: the path's named parts.
    params: dict[str, Any]
    account: str
    region: str


def action_of(request: ApiRequest) -> str:
    return ACTION_NAMES.get(
        (request.service, request.operation),
        f"{IAM_PREFIX.get(request.service, request.service)}:{request.operation}",
    )


# ---- request fields ------------------------------------------------------------------------


def members(params: dict[str, Any], prefix: str) -> list[str]:
    """The values of a query list (``prefix.1``, ``prefix.2``, ...), in order."""
    values: list[str] = []
    while f"{prefix}.{len(values) + 1}" in params:
        values.append(params[f"{prefix}.{len(values) + 1}"])
    return values


def query_tags(params: dict[str, Any], prefix: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    index = 1
    while f"{prefix}.{index}.Key" in params:
        tags[params[f"{prefix}.{index}.Key"]] = params.get(f"{prefix}.{index}.Value", "")
        index += 1
    return tags


def ec2_tag_specifications(
    params: dict[str, Any], prefix: str = "TagSpecification"
) -> dict[str, dict[str, str]]:
    """EC2's TagSpecification.N: resource type -> the tags it asks for."""
    specs: dict[str, dict[str, str]] = {}
    index = 1
    while f"{prefix}.{index}.ResourceType" in params:
        specs[params[f"{prefix}.{index}.ResourceType"]] = query_tags(params, f"{prefix}.{index}.Tag")
        index += 1
    return specs


def request_tag_context(tags: dict[str, str]) -> Context:
    context: Context = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    context["aws:TagKeys"] = sorted(tags)
    return context


def resource_tag_context(tags: dict[str, str], service_prefix: str) -> Context:
    """aws:ResourceTag/* and the service's own <prefix>:ResourceTag/* (EC2, Auto Scaling)."""
    context: Context = {f"aws:ResourceTag/{key}": value for key, value in tags.items()}
    if service_prefix:
        context.update({f"{service_prefix}:ResourceTag/{key}": value for key, value in tags.items()})
    return context


# ---- ARNs ----------------------------------------------------------------------------------


# The id prefix of each EC2 resource type the workflow creates.
EC2_ID_PREFIXES = {
    "security-group": "sg",
    "security-group-rule": "sgr",
    "launch-template": "lt",
    "instance": "i",
    "volume": "vol",
    "network-interface": "eni",
}


def new_id(request: ApiRequest, kind: str, length: int = 17) -> str:
    """The id of a resource the request creates. AWS authorizes a create against the new
    resource's ARN, whose id it has just made; the rehearsal decides before moto makes one, so
    it uses an id of AWS's shape, derived from the request (the same request, the same id, so
    the decision is made once). A policy cannot name an id that does not exist yet, so which id
    it is does not change a decision."""
    digest = hashlib.sha256(json.dumps([kind, request.params], sort_keys=True).encode()).hexdigest()
    return digest[:length]


def new_ec2_arn(request: ApiRequest, resource_type: str) -> str:
    prefix = EC2_ID_PREFIXES[resource_type]
    return ec2_arn(request, resource_type, f"{prefix}-{new_id(request, resource_type)}")


def ec2_arn(request: ApiRequest, resource_type: str, resource_id: str) -> str:
    return f"arn:aws:ec2:{request.region}:{request.account}:{resource_type}/{resource_id}"


def ec2_tags(request: ApiRequest, resource_id: str) -> dict[str, str]:
    return dict(ec2_backends[request.account][request.region].tags.get(resource_id, {}))


def elb_tags(request: ApiRequest, arn: str) -> dict[str, str]:
    backend = elbv2_backends[request.account][request.region]
    return dict(backend.tagging_service.get_tag_dict_for_resource(arn))


def group_arn_and_tags(request: ApiRequest, name: str) -> tuple[str, dict[str, str]]:
    group = autoscaling_backends[request.account][request.region].autoscaling_groups.get(name)
    if group is None:
        # No such group: AWS authorizes against the name (the call then fails as not found).
        return autoscaling_group_arn(request, name, _uuid_shaped(new_id(request, "group", 32))), {}
    return group.arn, {tag["Key"]: tag.get("Value", "") for tag in group.tags}


def autoscaling_group_arn(request: ApiRequest, name: str, group_id: str) -> str:
    return (
        f"arn:aws:autoscaling:{request.region}:{request.account}:autoScalingGroup:{group_id}"
        f":autoScalingGroupName/{name}"
    )


def first_use_of(request: ApiRequest, service: str, role_name: str) -> list[Check]:
    """The first group or load balancer of an account makes AWS create the service's linked role,
    with the caller's iam:CreateServiceLinkedRole (Auto Scaling and ELB user guides, "Service-linked
    roles"). moto's account never holds one, so every create is checked as a first use."""
    roles = iam_backends[request.account]["global"].roles.values()
    if any(role.name == role_name for role in roles):
        return []
    arn = f"arn:aws:iam::{request.account}:role/aws-service-role/{service}/{role_name}"
    return [Check("iam:CreateServiceLinkedRole", arn, {"iam:AWSServiceName": service})]


def _uuid_shaped(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


# ---- EC2 -----------------------------------------------------------------------------------


def tag_on_create(request: ApiRequest, resource_type: str, tags: dict[str, str], create_action: str) -> Check:
    """Tagging a resource while creating it is also a CreateTags on it, with ec2:CreateAction."""
    return Check(
        "ec2:CreateTags",
        new_ec2_arn(request, resource_type),
        {**request_tag_context(tags), "ec2:CreateAction": create_action},
    )


def create_security_group(request: ApiRequest) -> list[Check]:
    vpc_id = request.params.get("VpcId", "")
    tags = ec2_tag_specifications(request.params).get("security-group", {})
    checks = [
        Check("ec2:CreateSecurityGroup", new_ec2_arn(request, "security-group"), request_tag_context(tags)),
        Check(
            "ec2:CreateSecurityGroup",
            ec2_arn(request, "vpc", vpc_id),
            {**resource_tag_context(ec2_tags(request, vpc_id), "ec2"), "ec2:VpcID": vpc_id},
        ),
    ]
    if tags:
        checks.append(tag_on_create(request, "security-group", tags, "CreateSecurityGroup"))
    return checks


def authorize_security_group_ingress(request: ApiRequest) -> list[Check]:
    group_id = request.params.get("GroupId", "")
    tags = ec2_tag_specifications(request.params).get("security-group-rule", {})
    checks = [
        Check(
            "ec2:AuthorizeSecurityGroupIngress",
            ec2_arn(request, "security-group", group_id),
            {**resource_tag_context(ec2_tags(request, group_id), "ec2"), "ec2:SecurityGroupID": group_id},
        )
    ]
    if tags:
        checks.append(
            Check(
                "ec2:AuthorizeSecurityGroupIngress",
                new_ec2_arn(request, "security-group-rule"),
                request_tag_context(tags),
            )
        )
        checks.append(tag_on_create(request, "security-group-rule", tags, "AuthorizeSecurityGroupIngress"))
    return checks


def create_launch_template(request: ApiRequest) -> list[Check]:
    tags = ec2_tag_specifications(request.params).get("launch-template", {})
    checks = [
        Check("ec2:CreateLaunchTemplate", new_ec2_arn(request, "launch-template"), request_tag_context(tags))
    ]
    if tags:
        checks.append(tag_on_create(request, "launch-template", tags, "CreateLaunchTemplate"))
    return checks


def delete_tagged_ec2(action: str, resource_type: str, id_field: str) -> Callable[[ApiRequest], list[Check]]:
    def checks(request: ApiRequest) -> list[Check]:
        ids = members(request.params, id_field) or [request.params.get(id_field, "")]
        return [
            Check(
                action,
                ec2_arn(request, resource_type, resource_id),
                resource_tag_context(ec2_tags(request, resource_id), "ec2"),
            )
            for resource_id in ids
        ]

    return checks


def delete_launch_template(request: ApiRequest) -> list[Check]:
    template_id = request.params.get("LaunchTemplateId") or _launch_template_id(
        request, request.params.get("LaunchTemplateName", "")
    )
    return [
        Check(
            "ec2:DeleteLaunchTemplate",
            ec2_arn(request, "launch-template", template_id),
            resource_tag_context(ec2_tags(request, template_id), "ec2"),
        )
    ]


def _launch_template_id(request: ApiRequest, name: str) -> str:
    backend = ec2_backends[request.account][request.region]
    template = backend.launch_template_name_to_ids.get(name)
    return str(template[0]) if template else name


# ---- Auto Scaling --------------------------------------------------------------------------


def create_auto_scaling_group(request: ApiRequest) -> list[Check]:
    params = request.params
    name = params.get("AutoScalingGroupName", "")
    tags = query_tags(params, "Tags.member")
    arn = autoscaling_group_arn(request, name, _uuid_shaped(new_id(request, "group", 32)))
    context = request_tag_context(tags)
    checks = [
        Check("autoscaling:CreateAutoScalingGroup", arn, context),
        *first_use_of(request, "autoscaling.amazonaws.com", "AWSServiceRoleForAutoScaling"),
    ]
    if tags:
        # Tags given at creation need autoscaling:CreateOrUpdateTags too.
        checks.append(Check("autoscaling:CreateOrUpdateTags", arn, context))
    template_id = params.get("LaunchTemplate.LaunchTemplateId") or _launch_template_id(
        request, params.get("LaunchTemplate.LaunchTemplateName", "")
    )
    if template_id:
        subnets = [s for s in params.get("VPCZoneIdentifier", "").split(",") if s]
        checks.extend(
            launch_from_template(
                request, template_id, params.get("LaunchTemplate.Version", "$Default"), subnets
            )
        )
    return checks


def launch_from_template(
    request: ApiRequest, template_id: str, version: str, subnets: list[str]
) -> list[Check]:
    """What Auto Scaling checks that the caller may do with the launch template: run instances
    from it (every resource RunInstances names), tag what its TagSpecifications tag, and pass its
    instance profile's role to EC2."""
    backend = ec2_backends[request.account][request.region]
    template = backend.launch_templates.get(template_id)
    if template is None:
        return [Check("ec2:RunInstances", ec2_arn(request, "launch-template", template_id), {})]
    data = _template_data(template, version)
    template_arn = ec2_arn(request, "launch-template", template_id)
    from_template: Context = {"ec2:LaunchTemplate": template_arn, "ec2:IsLaunchTemplateResource": "true"}
    specs = {spec["ResourceType"]: _spec_tags(spec) for spec in data.get("TagSpecification", [])}
    created = {kind: new_ec2_arn(request, kind) for kind in ("instance", "volume", "network-interface")}
    resources = [
        *created.values(),
        template_arn,
        f"arn:aws:ec2:{request.region}::image/{data.get('ImageId', '')}",
        *(ec2_arn(request, "security-group", group) for group in _list(data.get("SecurityGroupId"))),
        *(ec2_arn(request, "subnet", subnet) for subnet in subnets),
    ]
    checks = []
    for arn in resources:
        kind, _, resource_id = arn.rpartition(":")[2].partition("/")
        context: Context = dict(from_template)
        if arn in created.values():
            context.update(request_tag_context(specs.get(kind, {})))
        else:
            context.update(resource_tag_context(ec2_tags(request, resource_id), "ec2"))
        checks.append(Check("ec2:RunInstances", arn, context))
    for kind, tags in specs.items():
        checks.append(tag_on_create(request, kind, tags, "RunInstances"))
    profile = data.get("IamInstanceProfile", {})
    if profile:
        checks.extend(_pass_profile_role(request, profile.get("Arn") or profile.get("Name", "")))
    return checks


def _template_data(template: Any, version: str) -> dict[str, Any]:
    if version == "$Latest":
        chosen = template.latest_version()
    elif version in ("$Default", ""):
        chosen = template.default_version()
    else:
        chosen = template.get_version(int(version))
    data: dict[str, Any] = chosen.data
    return data


def _spec_tags(spec: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in _list(spec.get("Tag"))}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _pass_profile_role(request: ApiRequest, profile: str) -> list[Check]:
    name = profile.rsplit("/", 1)[-1]
    iam = iam_backends[request.account]["global"]
    found = next((p for p in iam.instance_profiles.values() if name in (p.name, p.arn)), None)
    if found is None:
        return [
            Check(
                "iam:PassRole",
                f"arn:aws:iam::{request.account}:role/{name}",
                {"iam:PassedToService": "ec2.amazonaws.com"},
            )
        ]
    return [
        Check("iam:PassRole", role.arn, {"iam:PassedToService": "ec2.amazonaws.com"}) for role in found.roles
    ]


def on_tagged_group(action: str) -> Callable[[ApiRequest], list[Check]]:
    def checks(request: ApiRequest) -> list[Check]:
        arn, tags = group_arn_and_tags(request, request.params.get("AutoScalingGroupName", ""))
        return [Check(action, arn, resource_tag_context(tags, "autoscaling"))]

    return checks


# ---- Elastic Load Balancing ------------------------------------------------------------------


def elb_arn(request: ApiRequest, kind: str, name: str) -> str:
    prefix = f"arn:aws:elasticloadbalancing:{request.region}:{request.account}"
    return f"{prefix}:{kind}/{name}/{new_id(request, kind, 16)}"


def create_elb_resource(action: str, kind: str) -> Callable[[ApiRequest], list[Check]]:
    def checks(request: ApiRequest) -> list[Check]:
        tags = query_tags(request.params, "Tags.member")
        arn = elb_arn(request, kind, request.params.get("Name", ""))
        checks = [Check(f"elasticloadbalancing:{action}", arn, request_tag_context(tags))]
        if action == "CreateLoadBalancer":
            checks += first_use_of(
                request, "elasticloadbalancing.amazonaws.com", "AWSServiceRoleForElasticLoadBalancing"
            )
        if tags:
            checks.append(
                Check(
                    "elasticloadbalancing:AddTags",
                    arn,
                    {**request_tag_context(tags), "elasticloadbalancing:CreateAction": action},
                )
            )
        return checks

    return checks


def create_listener(request: ApiRequest) -> list[Check]:
    load_balancer = request.params.get("LoadBalancerArn", "")
    tags = query_tags(request.params, "Tags.member")
    checks = [
        Check(
            "elasticloadbalancing:CreateListener",
            load_balancer,
            {**request_tag_context(tags), **resource_tag_context(elb_tags(request, load_balancer), "")},
        )
    ]
    if tags:
        listener = (
            load_balancer.replace(":loadbalancer/", ":listener/") + f"/{new_id(request, 'listener', 16)}"
        )
        checks.append(
            Check(
                "elasticloadbalancing:AddTags",
                listener,
                {**request_tag_context(tags), "elasticloadbalancing:CreateAction": "CreateListener"},
            )
        )
    return checks


def on_tagged_elb(action: str, arn_field: str) -> Callable[[ApiRequest], list[Check]]:
    def checks(request: ApiRequest) -> list[Check]:
        arn = request.params.get(arn_field, "")
        return [
            Check(f"elasticloadbalancing:{action}", arn, resource_tag_context(elb_tags(request, arn), ""))
        ]

    return checks


# ---- the JSON and REST APIs ------------------------------------------------------------------


def on_table(request: ApiRequest) -> list[Check]:
    table = request.params.get("TableName", "")
    arn = f"arn:aws:dynamodb:{request.region}:{request.account}:table/{table}"
    if request.params.get("IndexName"):
        arn += f"/index/{request.params['IndexName']}"
    return [Check(f"dynamodb:{request.operation}", arn, {})]


def get_parameter(request: ApiRequest) -> list[Check]:
    name = str(request.params.get("Name", ""))
    # AWS's public parameters (/aws/service/...) live in no account.
    account = "" if name.startswith("/aws/") else request.account
    return [Check("ssm:GetParameter", f"arn:aws:ssm:{request.region}:{account}:parameter{name}", {})]


def send_command(request: ApiRequest) -> list[Check]:
    document = str(request.params.get("DocumentName", ""))
    owner = "" if document.startswith("AWS-") else request.account
    checks = [Check("ssm:SendCommand", f"arn:aws:ssm:{request.region}:{owner}:document/{document}", {})]
    for instance in request.params.get("InstanceIds", []):
        tags = ec2_tags(request, instance)
        checks.append(
            Check(
                "ssm:SendCommand",
                ec2_arn(request, "instance", instance),
                {**resource_tag_context(tags, ""), **{f"ssm:resourceTag/{k}": v for k, v in tags.items()}},
            )
        )
    return checks


def on_execution(request: ApiRequest) -> list[Check]:
    return [Check(f"states:{request.operation}", str(request.params.get("executionArn", "")), {})]


def on_state_machine(request: ApiRequest) -> list[Check]:
    return [Check(f"states:{request.operation}", str(request.params.get("stateMachineArn", "")), {})]


def invoke(request: ApiRequest) -> list[Check]:
    function = request.params["function"]
    if not function.startswith("arn:"):
        function = f"arn:aws:lambda:{request.region}:{request.account}:function:{function}"
    return [Check("lambda:InvokeFunction", function, {})]


def put_object(request: ApiRequest) -> list[Check]:
    arn = f"arn:aws:s3:::{request.params['bucket']}/{request.params['key']}"
    return [Check("s3:PutObject", arn, {})]


def get_object(request: ApiRequest) -> list[Check]:
    arn = f"arn:aws:s3:::{request.params['bucket']}/{request.params['key']}"
    return [Check("s3:GetObject", arn, {})]


def publish(request: ApiRequest) -> list[Check]:
    topic_arn = str(request.params.get("TopicArn", ""))
    return [Check("sns:Publish", topic_arn, {}), *topic_key_use(request, topic_arn)]


def topic_key_use(request: ApiRequest, topic_arn: str) -> list[Check]:
    """Publishing to a topic encrypted with a customer managed key is also, for the publisher,
    kms:GenerateDataKey and kms:Decrypt on that key through SNS (SNS developer guide, "Key
    management"), decided by the key's policy and the publisher's. The AWS managed key
    (alias/aws/sns) is left out: its own policy admits every principal of the account through SNS."""
    topic = sns_backends[request.account][request.region].topics.get(topic_arn)
    key_name = str(getattr(topic, "kms_master_key_id", "") or "")
    if not key_name or "alias/aws/" in key_name:
        return []
    kms = kms_backends[request.account][request.region]
    try:
        key = kms.describe_key(key_name)
    except (KeyError, TypeError):
        # No such key: SNS answers KMSNotFound, which is no IAM decision.
        return []
    policy = json.loads(key.policy) if isinstance(key.policy, str) else key.policy
    context: Context = {
        "kms:ViaService": f"sns.{request.region}.amazonaws.com",
        "kms:CallerAccount": request.account,
    }
    return [Check(action, key.arn, context, policy) for action in ("kms:GenerateDataKey", "kms:Decrypt")]


def describe_alarms(request: ApiRequest) -> list[Check]:
    names = members(request.params, "AlarmNames.member") or list(request.params.get("AlarmNames", []))
    return [
        Check(
            "cloudwatch:DescribeAlarms",
            f"arn:aws:cloudwatch:{request.region}:{request.account}:alarm:{name}",
            {},
        )
        for name in names
    ] or [
        Check(
            "cloudwatch:DescribeAlarms", f"arn:aws:cloudwatch:{request.region}:{request.account}:alarm:*", {}
        )
    ]


def describe_alarm_history(request: ApiRequest) -> list[Check]:
    name = str(request.params.get("AlarmName", "")) or "*"
    return [
        Check(
            "cloudwatch:DescribeAlarmHistory",
            f"arn:aws:cloudwatch:{request.region}:{request.account}:alarm:{name}",
            {},
        )
    ]


RULES: dict[tuple[str, str], Callable[[ApiRequest], list[Check]]] = {
    ("ec2", "CreateSecurityGroup"): create_security_group,
    ("ec2", "AuthorizeSecurityGroupIngress"): authorize_security_group_ingress,
    ("ec2", "CreateLaunchTemplate"): create_launch_template,
    ("ec2", "DeleteSecurityGroup"): delete_tagged_ec2("ec2:DeleteSecurityGroup", "security-group", "GroupId"),
    ("ec2", "DeleteLaunchTemplate"): delete_launch_template,
    ("ec2", "TerminateInstances"): delete_tagged_ec2("ec2:TerminateInstances", "instance", "InstanceId"),
    ("ec2", "GetConsoleOutput"): delete_tagged_ec2("ec2:GetConsoleOutput", "instance", "InstanceId"),
    ("autoscaling", "CreateAutoScalingGroup"): create_auto_scaling_group,
    ("autoscaling", "PutScalingPolicy"): on_tagged_group("autoscaling:PutScalingPolicy"),
    ("autoscaling", "EnableMetricsCollection"): on_tagged_group("autoscaling:EnableMetricsCollection"),
    ("autoscaling", "DeleteAutoScalingGroup"): on_tagged_group("autoscaling:DeleteAutoScalingGroup"),
    ("autoscaling", "CreateOrUpdateTags"): on_tagged_group("autoscaling:CreateOrUpdateTags"),
    ("elasticloadbalancing", "CreateTargetGroup"): create_elb_resource("CreateTargetGroup", "targetgroup"),
    ("elasticloadbalancing", "CreateLoadBalancer"): create_elb_resource(
        "CreateLoadBalancer", "loadbalancer/app"
    ),
    ("elasticloadbalancing", "CreateListener"): create_listener,
    ("elasticloadbalancing", "ModifyTargetGroupAttributes"): on_tagged_elb(
        "ModifyTargetGroupAttributes", "TargetGroupArn"
    ),
    ("elasticloadbalancing", "DeleteTargetGroup"): on_tagged_elb("DeleteTargetGroup", "TargetGroupArn"),
    ("elasticloadbalancing", "DeleteLoadBalancer"): on_tagged_elb("DeleteLoadBalancer", "LoadBalancerArn"),
    ("elasticloadbalancing", "DeleteListener"): on_tagged_elb("DeleteListener", "ListenerArn"),
    ("dynamodb", "GetItem"): on_table,
    ("dynamodb", "PutItem"): on_table,
    ("dynamodb", "UpdateItem"): on_table,
    ("dynamodb", "DeleteItem"): on_table,
    ("dynamodb", "Query"): on_table,
    ("dynamodb", "Scan"): on_table,
    ("ssm", "GetParameter"): get_parameter,
    ("ssm", "SendCommand"): send_command,
    ("states", "DescribeExecution"): on_execution,
    ("states", "StopExecution"): on_execution,
    ("states", "StartExecution"): on_state_machine,
    ("states", "ListExecutions"): on_state_machine,
    ("lambda", "Invoke"): invoke,
    ("s3", "PutObject"): put_object,
    ("s3", "GetObject"): get_object,
    ("sns", "Publish"): publish,
    ("monitoring", "DescribeAlarms"): describe_alarms,
    ("monitoring", "DescribeAlarmHistory"): describe_alarm_history,
}


def checks_for(request: ApiRequest) -> list[Check]:
    """Every check AWS makes for the request; an action with no rule here takes no resource."""
    rule = RULES.get((request.service, request.operation))
    if rule is None:
        return [Check(action_of(request), None, {})]
    return rule(request)
