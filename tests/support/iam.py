"""The IAM policies of the deployed stack, as CloudFormation receives them after the SAM transform.

SAM writes most of the policies itself (function roles from ``Policies``, the
state machine's role, policy templates such as ``LambdaInvokePolicy``, the
schedule's role), so they are read from the translator's output, not from
template.yaml. Intrinsic functions are rendered to readable strings: pseudo
parameters become ``aws``, ``<region>`` and ``<account>``, a reference to a
template resource or parameter becomes ``<LogicalId>`` or ``<LogicalId.Attribute>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from moto import mock_aws
from scalelab_rehearsal.deploy import package, read_template, translate

PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": "<region>", "AWS::AccountId": "<account>"}
POLICY_RESOURCE_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}
_ARN = re.compile(r"^arn:[^:]*:(?P<service>[^:]*):[^:]*:[^:]*:(?P<resource>.*)$")
# ARNs whose resource part starts with the resource's own name, not with a type.
_SERVICES_WITHOUT_RESOURCE_TYPE = {"s3", "sns", "sqs"}
# Fixed words inside ARN formats, which name no resource.
_ARN_FORMAT_WORDS = {"autoScalingGroupName", "launchConfigurationName", "app", "net", "gwy"}


@cache
def transformed_template() -> dict[str, Any]:
    """template.yaml packaged (code uploaded to an emulated S3, as `sam package` does) and transformed."""
    template = read_template()
    with mock_aws():
        package(template, boto3.client("s3", region_name="us-east-1"))
    return translate(template)


@dataclass(frozen=True)
class Statement:
    where: str  # role or policy logical id / policy name / Sid or position
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict[str, dict[str, Any]]
    not_action: bool
    not_resource: bool


def alternatives(value: Any) -> list[Any]:
    """Every value an ``Fn::If`` may take (``AWS::NoValue`` takes none); a plain value is its own."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _condition, when_true, when_false = value["Fn::If"]
        return [*alternatives(when_true), *alternatives(when_false)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def _as_list(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    return [alternative for item in items for alternative in alternatives(item)]


def _substitute(text: str, variables: dict[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return render(variables[name])
        return PSEUDO_PARAMETERS.get(name, f"<{name}>")

    return re.sub(r"\$\{([^}!]+)\}", replace, text)


def render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Ref":
            return PSEUDO_PARAMETERS.get(argument, f"<{argument}>")
        if key == "Fn::GetAtt":
            return f"<{argument if isinstance(argument, str) else '.'.join(argument)}>"
        if key == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            return _substitute(text, variables)
        if key == "Fn::Join":
            separator, items = argument
            return separator.join(render(item) for item in _as_list(items))
    return f"<{json.dumps(value, sort_keys=True)}>"


def resource_type(resource: str) -> str:
    """The resource type an ARN names (``security-group`` in ``...:security-group/*``), or ``*``."""
    match = _ARN.match(resource)
    if match is None or match["service"] in _SERVICES_WITHOUT_RESOURCE_TYPE:
        return "*"
    return re.split(r"[/:]", match["resource"])[0]


def names_no_resource(resource: str) -> bool:
    """True for ``*`` and for an ARN that covers every resource of its type (``...:instance/*``).

    A reference to a template resource, or an ARN with a name in it (``targetgroup/scalelab-*/*``,
    ``function:<PrepareRunFunction>*``), names resources and is False.
    """
    if resource == "*":
        return True
    match = _ARN.match(resource)
    if match is None:
        return False
    segments = re.split(r"[/:]", match["resource"])
    if match["service"] not in _SERVICES_WITHOUT_RESOURCE_TYPE and len(segments) > 1:
        segments = segments[1:]
    return all(not segment.strip("*?") or segment in _ARN_FORMAT_WORDS for segment in segments)


def _documents(template: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for logical_id, spec in template["Resources"].items():
        properties = spec.get("Properties", {})
        if spec["Type"] == "AWS::IAM::Role":
            for index, policy in enumerate(_as_list(properties.get("Policies", []))):
                name = policy.get("PolicyName", index)
                yield f"{logical_id}/{render(name)}", policy["PolicyDocument"]
        elif spec["Type"] in POLICY_RESOURCE_TYPES:
            yield logical_id, properties["PolicyDocument"]


def statements(template: dict[str, Any]) -> list[Statement]:
    """Every statement of every role's inline policies and of every IAM policy resource."""
    found = []
    for where, document in _documents(template):
        for index, statement in enumerate(_as_list(document["Statement"])):
            found.append(
                Statement(
                    where=f"{where}/{statement.get('Sid', index)}",
                    effect=statement["Effect"],
                    actions=tuple(render(action) for action in _as_list(statement.get("Action", []))),
                    resources=tuple(render(item) for item in _as_list(statement.get("Resource", []))),
                    condition=statement.get("Condition", {}),
                    not_action="NotAction" in statement,
                    not_resource="NotResource" in statement,
                )
            )
    return found


def statements_by_role(template: dict[str, Any]) -> dict[str, list[Statement]]:
    """Role logical id -> every statement that applies to the role: its inline policies, and the
    template's own policies attached to it (an ``AWS::IAM::ManagedPolicy`` named in its
    ``ManagedPolicyArns``, as SAM writes a ``!Ref`` in a function's ``Policies``, or a policy resource
    that names the role in its ``Roles``)."""
    found = statements(template)
    attached = managed_policy_arns(template)
    by_role: dict[str, list[Statement]] = {}
    for role in attached:
        policies = {arn.strip("<>") for arn in attached[role] if arn.startswith("<")}
        policies |= {
            logical_id
            for logical_id, spec in template["Resources"].items()
            if spec["Type"] in POLICY_RESOURCE_TYPES
            and f"<{role}>" in {render(name) for name in _as_list(spec["Properties"].get("Roles", []))}
        }
        by_role[role] = [
            statement
            for statement in found
            if statement.where.split("/", 1)[0] == role or statement.where.split("/", 1)[0] in policies
        ]
    return by_role


def managed_policy_arns(template: dict[str, Any]) -> dict[str, list[str]]:
    """Role logical id -> the managed policies attached to it, rendered."""
    return {
        logical_id: [render(arn) for arn in _as_list(spec["Properties"].get("ManagedPolicyArns", []))]
        for logical_id, spec in template["Resources"].items()
        if spec["Type"] == "AWS::IAM::Role"
    }


def instance_profile_roles(template: dict[str, Any]) -> set[str]:
    """The ARNs (rendered) of the roles that the template's instance profiles carry."""
    return {
        f"<{render(role).strip('<>')}.Arn>"
        for spec in template["Resources"].values()
        if spec["Type"] == "AWS::IAM::InstanceProfile"
        for role in _as_list(spec["Properties"]["Roles"])
    }
