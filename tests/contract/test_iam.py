"""Least privilege, read from the policies CloudFormation receives (template.yaml after the SAM transform).

Every role's statements are checked, whoever wrote them: the functions' own
``Policies``, SAM's policy templates, the state machine's and the schedule's
roles, and any role or policy added later. The rules:

* no Allow grants every action, or every action of a service, and none uses
  NotAction or NotResource;
* an Allow of a destructive or mutating action (anything but Describe*, Get*,
  List*, BatchGet*, Query, Scan) on ``*``, or on an ARN that covers every
  resource of its type, carries a run-tag condition: ``aws:RequestTag/scalelab:run``
  for what it creates, the run tag on the resource (``aws:ResourceTag``, or the
  service's own key) for what it changes or deletes, ``ec2:CreateAction`` /
  ``elasticloadbalancing:CreateAction`` for tagging; or it is in EXCEPTIONS,
  with AWS's reason, and docs/ lists it;
* ``ssm:SendCommand`` only on named documents and on instances carrying the run tag;
* ``iam:PassRole`` only of the lab instances' role, only to EC2;
* managed policies only from MANAGED_POLICIES, or the template's own (``AWS::IAM::ManagedPolicy``),
  whose statements are checked like every other;
* the deletes of what a run made only in the teardown's and the janitor's roles, from one shared policy.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.support.iam import (
    Statement,
    instance_profile_roles,
    managed_policy_arns,
    names_no_resource,
    resource_type,
    statements,
    statements_by_role,
    transformed_template,
)
from tests.support.template import ROOT

RUN_TAG = "scalelab:run"
READ_ONLY_VERBS = ("Describe", "Get", "List", "BatchGet", "Query", "Scan")
CREATE_VERBS = ("Create", "Run", "Allocate", "Import", "Copy", "Request", "Launch")
REQUEST_TAG_KEYS = frozenset({f"aws:RequestTag/{RUN_TAG}"})
RESOURCE_TAG_KEYS = frozenset(
    f"{prefix}:{name}/{RUN_TAG}"
    for prefix, name in [
        ("aws", "ResourceTag"),
        ("ec2", "ResourceTag"),
        ("autoscaling", "ResourceTag"),
        ("elasticloadbalancing", "ResourceTag"),
        ("ssm", "resourceTag"),
    ]
)
# Tagging actions: only while the resource is being created (by an action that requires the run tag).
TAG_ON_CREATE = {
    "ec2:CreateTags": frozenset({"ec2:CreateAction"}),
    "elasticloadbalancing:AddTags": frozenset({"elasticloadbalancing:CreateAction"}),
}
# (action, resource type) where an action that changes one resource also creates another, which takes
# the request tag: AuthorizeSecurityGroupIngress changes a group and creates a rule.
CREATED_ALONG = {("ec2:AuthorizeSecurityGroupIngress", "security-group-rule")}
# What Teardown and the janitor's sweep delete, from one policy both roles have; the sweep also terminates.
RUN_DELETES = frozenset(
    {
        "ec2:DeleteSecurityGroup",
        "ec2:DeleteLaunchTemplate",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteTargetGroup",
        "autoscaling:DeleteAutoScalingGroup",
    }
)
SHARED_DELETE_POLICY = "DeleteTaggedResourcesPolicy"
# Operators under which a present key with a value is required; IfExists, Not and ForAllValues
# variants also match when the key is missing, so they scope nothing.
REQUIRING_OPERATORS = {"StringEquals", "StringLike", "StringEqualsIgnoreCase", "ArnEquals", "ArnLike"}


@dataclass(frozen=True)
class Exemption:
    action: str
    resource: str
    still_required: frozenset[str]  # condition keys the statement must keep
    reason: str


NO_RESOURCE_TYPE = (
    "The Service Authorization Reference lists no resource type for it: 'If there is no value for this "
    "column, you must specify all resources (*) to which the policy applies in the Resource element.'"
)
EXCEPTIONS = [
    Exemption(
        "ec2:CreateSecurityGroup",
        "arn:aws:ec2:<region>:<account>:vpc/*",
        frozenset(),
        "Service Authorization Reference, Amazon EC2: CreateSecurityGroup authorizes the VPC (vpc*) as "
        "well as the new group (security-group*). The VPC is the user's and carries no run tag; the "
        "security-group resource of the same call requires aws:RequestTag/scalelab:run.",
    ),
    Exemption(
        "ec2:RunInstances",
        "*",
        frozenset({"ec2:LaunchTemplate"}),
        "Amazon EC2 Auto Scaling User Guide, launch template permissions: 'An IAM user or role that "
        "creates or updates an Auto Scaling group using a launch template must have permission to use "
        "the ec2:RunInstances action'. scalelab never calls RunInstances: Auto Scaling's service-linked "
        "role launches the instances and the group tags them. The request tags of that check are not "
        "documented, so the statement is narrowed by ec2:LaunchTemplate instead.",
    ),
    Exemption(
        "states:SendTaskSuccess",
        "*",
        frozenset(),
        f"{NO_RESOURCE_TYPE} The task token names the one task it completes.",
    ),
    Exemption(
        "ssm:CancelCommand",
        "*",
        frozenset(),
        f"{NO_RESOURCE_TYPE} StopStress cancels only a command whose comment names its own run.",
    ),
    *(
        Exemption(
            f"logs:{action}",
            "*",
            frozenset(),
            f"{NO_RESOURCE_TYPE} The AWS Step Functions Developer Guide (IAM policies for logging to "
            "CloudWatch Logs) grants it on all resources to a state machine that logs.",
        )
        for action in ("CreateLogDelivery", "UpdateLogDelivery", "DeleteLogDelivery", "PutResourcePolicy")
    ),
]

MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": (
        "SAM attaches it to every function role: CloudWatch Logs for the function's own log stream"
    ),
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": (
        "SAM attaches it for `Tracing: Active`: X-Ray's PutTraceSegments and PutTelemetryRecords take "
        "no resource-level permissions"
    ),
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore": (
        "the lab instances' role: what the SSM Agent needs to take Run Command, as AWS recommends"
    ),
}


def _is_read_only(action: str) -> bool:
    return action.split(":", 1)[-1].startswith(READ_ONLY_VERBS)


def _requires_one_of(condition: dict[str, dict[str, Any]], keys: frozenset[str]) -> bool:
    """True when the condition holds only where one of ``keys`` is present with a value."""
    wanted = {key.lower() for key in keys}
    for operator, entries in condition.items():
        for key, value in entries.items():
            if key.lower() not in wanted:
                continue
            if operator == "Null" and str(value).lower() == "false":
                return True
            if operator in REQUIRING_OPERATORS and value not in ("", [], None):
                return True
    return False


def _scoping_keys(action: str, resource: str) -> frozenset[str]:
    if action in TAG_ON_CREATE:
        return TAG_ON_CREATE[action]
    verb = action.split(":", 1)[-1]
    if verb.startswith(CREATE_VERBS) or (action, resource_type(resource)) in CREATED_ALONG:
        return REQUEST_TAG_KEYS
    return RESOURCE_TAG_KEYS


def _excused(action: str, resource: str, statement: Statement) -> bool:
    return any(
        exception.action == action
        and exception.resource == resource
        and all(_requires_one_of(statement.condition, frozenset({key})) for key in exception.still_required)
        for exception in EXCEPTIONS
    )


def _allows(statement: Statement, action: str) -> bool:
    return any(fnmatchcase(action.lower(), pattern.lower()) for pattern in statement.actions)


def _broad_grant_findings(statement: Statement) -> list[str]:
    found = [
        f"{statement.where}: allows every action{'' if action == '*' else ' of ' + action[:-2]}"
        for action in statement.actions
        if action == "*" or action.endswith(":*")
    ]
    if statement.not_action:
        found.append(f"{statement.where}: Allow with NotAction grants everything it does not list")
    if statement.not_resource:
        found.append(f"{statement.where}: Allow with NotResource grants every other resource")
    return found


def _untagged_findings(statement: Statement) -> list[str]:
    found = []
    for action in statement.actions:
        if _is_read_only(action):
            continue
        for resource in statement.resources:
            if not names_no_resource(resource):
                continue
            keys = _scoping_keys(action, resource)
            if _requires_one_of(statement.condition, keys) or _excused(action, resource, statement):
                continue
            needed = "the run tag on the resource" if keys == RESOURCE_TAG_KEYS else " or ".join(sorted(keys))
            found.append(f"{statement.where}: allows {action} on {resource} without a condition on {needed}")
    return found


_NAMED_DOCUMENT = re.compile(r"^arn:aws:ssm:[^:]*:[^:]*:document/[^*?]+$")
_INSTANCE = re.compile(r"^arn:aws:ec2:[^:]*:[^:]*:instance/")


def _send_command_findings(statement: Statement) -> list[str]:
    if not _allows(statement, "ssm:SendCommand"):
        return []
    found = []
    for resource in statement.resources:
        if _NAMED_DOCUMENT.match(resource):
            continue
        if _INSTANCE.match(resource) and _requires_one_of(statement.condition, RESOURCE_TAG_KEYS):
            continue
        found.append(
            f"{statement.where}: ssm:SendCommand on {resource}, which is neither a named document "
            f"nor an instance that must carry the {RUN_TAG} tag"
        )
    return found


def _pass_role_findings(statement: Statement, instance_roles: set[str]) -> list[str]:
    if not _allows(statement, "iam:PassRole"):
        return []
    found = [
        f"{statement.where}: iam:PassRole of {resource}, which is not the lab instances' role"
        for resource in statement.resources
        if resource not in instance_roles
    ]
    passed_to = statement.condition.get("StringEquals", {}).get("iam:PassedToService")
    if passed_to not in ("ec2.amazonaws.com", ["ec2.amazonaws.com"]):
        found.append(f"{statement.where}: iam:PassRole not limited to iam:PassedToService ec2.amazonaws.com")
    return found


def _managed_policy_findings(template: dict[str, Any]) -> list[str]:
    own = {
        f"<{logical_id}>"
        for logical_id, spec in template["Resources"].items()
        if spec["Type"] == "AWS::IAM::ManagedPolicy"
    }
    return [
        f"{role}: managed policy {arn} is not one of MANAGED_POLICIES"
        for role, arns in managed_policy_arns(template).items()
        for arn in arns
        if arn not in MANAGED_POLICIES and arn not in own
    ]


def findings(template: dict[str, Any]) -> list[str]:
    """Everything in the template's IAM that breaks the rules in this module's docstring."""
    instance_roles = instance_profile_roles(template)
    found = _managed_policy_findings(template)
    for statement in statements(template):
        if statement.effect != "Allow":
            continue
        found += _broad_grant_findings(statement)
        found += _untagged_findings(statement)
        found += _send_command_findings(statement)
        found += _pass_role_findings(statement, instance_roles)
    return found


# ---- the stack -------------------------------------------------------------------


def test_the_check_reads_the_roles_sam_generates() -> None:
    granted = {
        (statement.where.split("/", 1)[0], action)
        for statement in statements(transformed_template())
        for action in statement.actions
    }

    assert ("LabStateMachineRole", "lambda:InvokeFunction") in granted  # SAM's LambdaInvokePolicy
    assert ("LabStateMachineNightlyRole", "states:StartExecution") in granted  # the schedule's role


def test_no_role_grants_more_than_the_rules_allow() -> None:
    assert findings(transformed_template()) == []


def test_every_exception_is_still_needed() -> None:
    granted = {
        (action, resource)
        for statement in statements(transformed_template())
        for action in statement.actions
        for resource in statement.resources
    }

    for exception in EXCEPTIONS:
        assert (exception.action, exception.resource) in granted, exception.action


def test_every_exception_and_managed_policy_is_documented() -> None:
    docs = "\n".join(path.read_text() for path in (ROOT / "docs").glob("*.md"))

    for name in [exception.action for exception in EXCEPTIONS] + [
        arn.rsplit("/", 1)[-1] for arn in MANAGED_POLICIES
    ]:
        assert f"`{name}`" in docs, name


def test_only_the_teardown_and_the_sweep_delete_and_they_share_one_policy() -> None:
    by_role = statements_by_role(transformed_template())
    deletes = RUN_DELETES | {"ec2:TerminateInstances"}

    allowed = {
        role: {
            action
            for statement in found
            for action in deletes
            if statement.effect == "Allow" and _allows(statement, action)
        }
        for role, found in by_role.items()
    }
    assert {role: actions for role, actions in allowed.items() if actions} == {
        "TeardownLabFunctionRole": RUN_DELETES,
        "JanitorFunctionRole": deletes,
    }
    for role in ("TeardownLabFunctionRole", "JanitorFunctionRole"):
        granting = {
            statement.where.split("/", 1)[0]
            for statement in by_role[role]
            if any(_allows(statement, action) for action in RUN_DELETES)
        }
        assert granting == {SHARED_DELETE_POLICY}, role


def test_the_instance_role_is_passed_to_ec2_only() -> None:
    template = transformed_template()
    passing = [statement for statement in statements(template) if _allows(statement, "iam:PassRole")]

    assert passing
    assert all(statement.resources == ("<InstanceRole.Arn>",) for statement in passing)


def test_commands_run_only_the_shell_document_on_tagged_instances() -> None:
    sending = [
        statement for statement in statements(transformed_template()) if _allows(statement, "ssm:SendCommand")
    ]

    assert {resource for statement in sending for resource in statement.resources} == {
        "arn:aws:ssm:<region>::document/AWS-RunShellScript",
        "arn:aws:ec2:<region>:<account>:instance/*",
    }


# ---- the check itself can fail ------------------------------------------------------


def _with_statement(statement: dict[str, Any]) -> dict[str, Any]:
    """The stack with one more statement in the teardown function's role."""
    template = copy.deepcopy(transformed_template())
    policies = template["Resources"]["TeardownLabFunctionRole"]["Properties"]["Policies"]
    policies.append(
        {"PolicyName": "Injected", "PolicyDocument": {"Statement": [{"Sid": "Bad", **statement}]}}
    )
    return template


def _ec2(resource: str) -> dict[str, str]:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"}


BAD_STATEMENTS = {
    "terminate anything": {"Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*"},
    "delete every security group": {
        "Effect": "Allow",
        "Action": "ec2:DeleteSecurityGroup",
        "Resource": _ec2("security-group/*"),
    },
    "delete on a request tag": {
        "Effect": "Allow",
        "Action": "ec2:DeleteLaunchTemplate",
        "Resource": _ec2("launch-template/*"),
        "Condition": {"Null": {f"aws:RequestTag/{RUN_TAG}": "false"}},
    },
    "create with the tag only if present": {
        "Effect": "Allow",
        "Action": "ec2:CreateSecurityGroup",
        "Resource": _ec2("security-group/*"),
        "Condition": {"StringLikeIfExists": {f"aws:RequestTag/{RUN_TAG}": "*"}},
    },
    "tag anything": {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": _ec2("instance/*")},
    "every action of a service": {"Effect": "Allow", "Action": "ec2:*", "Resource": _ec2("vpc/vpc-1")},
    "every action": {"Effect": "Allow", "Action": "*", "Resource": {"Fn::GetAtt": ["RunTable", "Arn"]}},
    "not action": {"Effect": "Allow", "NotAction": "iam:*", "Resource": {"Fn::GetAtt": ["RunTable", "Arn"]}},
    "any document": {
        "Effect": "Allow",
        "Action": "ssm:SendCommand",
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}::document/*"},
    },
    "any instance": {"Effect": "Allow", "Action": "ssm:Send*", "Resource": _ec2("instance/*")},
    "pass any role": {
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": "*",
        "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    },
    "pass the instance role to Lambda": {
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": {"Fn::GetAtt": ["InstanceRole", "Arn"]},
        "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
    },
    "an exception without its narrowing": {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"},
}


@pytest.mark.parametrize("statement", BAD_STATEMENTS.values(), ids=BAD_STATEMENTS.keys())
def test_the_check_reports_a_statement_that_grants_too_much(statement: dict[str, Any]) -> None:
    reported = findings(_with_statement(statement))

    assert reported
    assert all("/Injected/Bad:" in finding for finding in reported)


def test_the_check_reports_a_statement_in_the_templates_own_managed_policy() -> None:
    template = copy.deepcopy(transformed_template())
    document = template["Resources"][SHARED_DELETE_POLICY]["Properties"]["PolicyDocument"]
    document["Statement"].append({"Sid": "Bad", **BAD_STATEMENTS["terminate anything"]})

    assert findings(template) == [
        f"{SHARED_DELETE_POLICY}/Bad: allows ec2:TerminateInstances on * "
        "without a condition on the run tag on the resource"
    ]


def test_the_check_reports_a_broad_managed_policy() -> None:
    template = copy.deepcopy(transformed_template())
    template["Resources"]["JudgeRunFunctionRole"]["Properties"]["ManagedPolicyArns"].append(
        "arn:aws:iam::aws:policy/AmazonEC2FullAccess"
    )

    assert findings(template) == [
        "JudgeRunFunctionRole: managed policy arn:aws:iam::aws:policy/AmazonEC2FullAccess "
        "is not one of MANAGED_POLICIES"
    ]


def test_the_check_accepts_a_delete_that_requires_the_run_tag_on_the_resource() -> None:
    statement = {
        "Effect": "Allow",
        "Action": "ec2:TerminateInstances",
        "Resource": _ec2("instance/*"),
        "Condition": {"StringEquals": {f"ec2:ResourceTag/{RUN_TAG}": "run-1"}},
    }

    assert findings(_with_statement(statement)) == []
