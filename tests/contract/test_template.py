"""template.yaml and the ASL agree, and the functions' policies only touch what a run tagged."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.template import ROOT, function_ids, resource, template

DESTRUCTIVE = re.compile(r":(Delete|Terminate|Modify|Authorize|Revoke|Put|Update|Create|Run|Attach|Detach)")
# Condition keys that narrow an action to what scalelab made or may make.
SCOPING_CONDITION_KEYS = re.compile(
    r"^((aws|autoscaling|ec2):(Resource|Request)Tag/scalelab:run|\w+:CreateAction"
    r"|iam:AWSServiceName|iam:PassedToService|ec2:LaunchTemplate)$"
)


def state_machine_definition() -> tuple[dict[str, Any], dict[str, Any]]:
    properties = resource("LabStateMachine")["Properties"]
    definition = json.loads((ROOT / properties["DefinitionUri"]).read_text())
    return definition, properties["DefinitionSubstitutions"]


def policy_statements(logical_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in resource(logical_id)["Properties"].get("Policies", []):
        statements.extend(policy.get("Statement", []))
    return statements


def substituted_definition() -> str:
    """The ASL as Step Functions receives it, with made-up ARNs for the substitutions."""
    text = (ROOT / resource("LabStateMachine")["Properties"]["DefinitionUri"]).read_text()
    _definition, substitutions = state_machine_definition()
    for name in substitutions:
        value = "aws" if name == "Partition" else f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        text = text.replace(f"${{{name}}}", value)
    return text


def test_the_asl_parses_with_the_step_functions_grammar() -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _tree = AmazonStateLanguageParser.parse(substituted_definition())

    assert type(program).__name__ == "Program"


def test_the_grammar_check_rejects_a_misspelt_field() -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser, ASLParserException

    with pytest.raises(ASLParserException):
        AmazonStateLanguageParser.parse(substituted_definition().replace('"SecondsPath"', '"SecondPath"', 1))


def test_every_substitution_in_the_asl_is_defined_and_used() -> None:
    definition, substitutions = state_machine_definition()
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(definition)))

    assert used == set(substitutions)


def test_every_function_the_asl_names_exists_in_the_template() -> None:
    _definition, substitutions = state_machine_definition()

    for name, value in substitutions.items():
        if name.endswith("FunctionArn"):
            assert value["Fn::GetAtt"][0] in function_ids(), name


def test_every_task_retries_transient_lambda_errors() -> None:
    definition, _ = state_machine_definition()

    for name, state in definition["States"].items():
        if state["Type"] == "Task":
            errors = {error for retry in state["Retry"] for error in retry["ErrorEquals"]}
            if "sns:publish" in state["Resource"]:
                assert "SNS.ThrottledException" in errors, name
            else:
                assert {
                    "Lambda.ServiceException",
                    "Lambda.TooManyRequestsException",
                    "AwsTransientError",
                } <= errors, name


def _successors(state: dict[str, Any]) -> set[str]:
    nexts = {state["Next"]} if "Next" in state else set()
    nexts |= {choice["Next"] for choice in state.get("Choices", [])}
    nexts |= {state["Default"]} if "Default" in state else set()
    return nexts | {catch["Next"] for catch in state.get("Catch", [])}


def _reaches(states: dict[str, Any], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name == goal:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(_successors(states[name]))
    return False


def test_every_state_after_prepare_catches_every_error_into_a_path_to_teardown() -> None:
    definition, _ = state_machine_definition()
    states = definition["States"]

    for name, state in states.items():
        if state["Type"] != "Task" or name in {"Prepare", "Teardown"}:
            continue
        catch_all = [catch for catch in state.get("Catch", []) if catch["ErrorEquals"] == ["States.ALL"]]
        assert catch_all, f"{name} has no Catch for States.ALL"
        if name != "Notify":
            assert _reaches(states, catch_all[0]["Next"], "Teardown"), name


def test_every_wait_and_deadline_comes_from_the_run_config() -> None:
    definition, _ = state_machine_definition()

    for name, state in definition["States"].items():
        if state["Type"] == "Wait":
            assert state["SecondsPath"].startswith("$.config.timing."), name
            assert "Seconds" not in state, name
        if state["Type"] == "Task" and ".waitForTaskToken" in state["Resource"]:
            assert state["TimeoutSecondsPath"].startswith("$.config.expectations."), name


@pytest.mark.parametrize("logical_id", function_ids())
def test_destructive_actions_are_scoped_to_what_a_run_tagged(logical_id: str) -> None:
    for statement in policy_statements(logical_id):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        destructive = [action for action in actions if DESTRUCTIVE.search(action)]
        if not destructive or statement["Resource"] != "*":
            continue
        keys = [key for operator in statement.get("Condition", {}).values() for key in operator]
        assert any(SCOPING_CONDITION_KEYS.match(key) for key in keys), (logical_id, statement["Sid"])


@pytest.mark.parametrize("logical_id", function_ids())
def test_deletes_require_the_run_tag_on_the_resource(logical_id: str) -> None:
    for statement in policy_statements(logical_id):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(":Delete" in action and not action.startswith("dynamodb:") for action in actions):
            assert statement["Condition"] == {"Null": {_resource_tag_key(actions[0]): "false"}}, statement[
                "Sid"
            ]


def _resource_tag_key(action: str) -> str:
    return (
        "autoscaling:ResourceTag/scalelab:run"
        if action.startswith("autoscaling:")
        else "aws:ResourceTag/scalelab:run"
    )


def test_every_function_has_a_log_group_with_retention() -> None:
    groups = [
        spec["Properties"]["LogGroupName"]["Fn::Sub"]
        for spec in template()["Resources"].values()
        if spec["Type"] == "AWS::Logs::LogGroup"
    ]

    for logical_id in function_ids():
        assert f"/aws/lambda/${{{logical_id}}}" in groups


def test_every_parameter_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()

    for name, spec in template()["Parameters"].items():
        assert f"`{name}`" in readme, name
        assert spec.get("Description"), name
