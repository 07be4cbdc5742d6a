"""template.yaml and the ASL agree. The IAM policies are checked in test_iam.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.iam import render, transformed_template
from tests.support.template import ROOT, function_ids, resource, template

# The lab's workflow, the cleanup of runs whose execution ended abnormally, and the load generator.
STATE_MACHINES = ["LabStateMachine", "CleanupStateMachine", "LoadStateMachine"]


def state_machine_definition(logical_id: str = "LabStateMachine") -> tuple[dict[str, Any], dict[str, Any]]:
    properties = resource(logical_id)["Properties"]
    definition = json.loads((ROOT / properties["DefinitionUri"]).read_text())
    return definition, properties["DefinitionSubstitutions"]


def substituted_definition(logical_id: str = "LabStateMachine") -> str:
    """The ASL as Step Functions receives it, with made-up ARNs for the substitutions."""
    text = (ROOT / resource(logical_id)["Properties"]["DefinitionUri"]).read_text()
    _definition, substitutions = state_machine_definition(logical_id)
    for name in substitutions:
        value = "aws" if name == "Partition" else f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        text = text.replace(f"${{{name}}}", value)
    return text


@pytest.mark.parametrize("logical_id", STATE_MACHINES)
def test_the_asl_parses_with_the_step_functions_grammar(logical_id: str) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _tree = AmazonStateLanguageParser.parse(substituted_definition(logical_id))

    assert type(program).__name__ == "Program"


def test_the_grammar_check_rejects_a_misspelt_field() -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser, ASLParserException

    with pytest.raises(ASLParserException):
        AmazonStateLanguageParser.parse(substituted_definition().replace('"SecondsPath"', '"SecondPath"', 1))


@pytest.mark.parametrize("logical_id", STATE_MACHINES)
def test_every_substitution_in_the_asl_is_defined_and_used(logical_id: str) -> None:
    definition, substitutions = state_machine_definition(logical_id)
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(definition)))

    assert used == set(substitutions)


@pytest.mark.parametrize("logical_id", STATE_MACHINES)
def test_every_function_the_asl_names_exists_in_the_template(logical_id: str) -> None:
    _definition, substitutions = state_machine_definition(logical_id)

    for name, value in substitutions.items():
        if name.endswith("FunctionArn"):
            assert value["Fn::GetAtt"][0] in function_ids(), name


def every_state(states: dict[str, Any]) -> dict[str, Any]:
    """The states, with those of every Map's item processor (and Parallel's branches) among them."""
    found = dict(states)
    for state in states.values():
        processor = state.get("ItemProcessor") or state.get("Iterator")
        for inner in [processor] if processor else state.get("Branches", []):
            found.update(every_state(inner["States"]))
    return found


@pytest.mark.parametrize("logical_id", STATE_MACHINES)
def test_every_task_retries_transient_lambda_errors(logical_id: str) -> None:
    definition, _ = state_machine_definition(logical_id)

    for name, state in every_state(definition["States"]).items():
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


def test_the_load_goes_on_when_a_worker_fails_and_ends_after_its_last_round() -> None:
    definition, _ = state_machine_definition("LoadStateMachine")
    states = definition["States"]
    round_state = states[definition["StartAt"]]
    workers = round_state["ItemProcessor"]["States"]
    worker = workers[round_state["ItemProcessor"]["StartAt"]]

    # A worker's every failure, after its retries, becomes a recorded result, not the Map's failure.
    assert [catch["ErrorEquals"] for catch in worker["Catch"]] == [["States.ALL"]]
    failed = workers[worker["Catch"][0]["Next"]]
    assert failed["Type"] == "Pass"
    assert failed.get("End") is True
    assert {"error.$", "cause.$", "worker.$", "round.$"} <= set(failed["Parameters"])
    # The workers at once are the plan's, which LoadWorkersCap bounds.
    assert round_state["Type"] == "Map"
    assert round_state["MaxConcurrencyPath"] == "$.plan.workers"
    # Every round leads to the check of the last round, which ends the execution.
    check = states[round_state["Next"]]
    assert {catch["Next"] for catch in round_state["Catch"]} == {round_state["Next"]}
    assert check["Choices"] == [
        {"Variable": "$.round", "NumericGreaterThanEqualsPath": "$.plan.last_round", "Next": "LoadDone"}
    ]
    assert states["LoadDone"]["Type"] == "Succeed"
    assert states[check["Default"]]["Next"] == definition["StartAt"]
    assert definition["TimeoutSeconds"] <= 14_400


def test_the_load_state_machine_may_invoke_only_its_worker() -> None:
    policies = resource("LoadStateMachine")["Properties"]["Policies"]
    invokes = [policy["LambdaInvokePolicy"] for policy in policies if "LambdaInvokePolicy" in policy]

    assert invokes == [{"FunctionName": {"Ref": "LoadWorkerFunction"}}]


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
        if name == "PublishReport":
            # After Teardown: a page that cannot be written still leaves Judge's plain notification.
            assert catch_all[0]["Next"] == "Notify"
        elif name != "Notify":
            assert _reaches(states, catch_all[0]["Next"], "Teardown"), name


def test_the_cleanup_starts_for_every_abnormal_end_of_a_lab_execution_only() -> None:
    rule = resource("CleanupStateMachine")["Properties"]["Events"]["LabExecutionEnded"]["Properties"][
        "Pattern"
    ]

    assert rule["source"] == ["aws.states"]
    assert rule["detail-type"] == ["Step Functions Execution Status Change"]
    assert rule["detail"] == {
        "stateMachineArn": [{"Ref": "LabStateMachine"}],
        "status": ["ABORTED", "TIMED_OUT", "FAILED"],
    }


def test_the_cleanup_loops_teardown_until_it_is_done() -> None:
    definition, _ = state_machine_definition("CleanupStateMachine")
    states = definition["States"]

    assert states["Teardown"]["Resource"] == "${TeardownLabFunctionArn}"
    assert _reaches(states, "Teardown", "CleanedUp")
    assert _reaches(states, states["TeardownDone?"]["Default"], "Teardown")


def test_every_wait_and_deadline_comes_from_the_run_config() -> None:
    definition, _ = state_machine_definition()

    for name, state in definition["States"].items():
        if state["Type"] == "Wait":
            assert state["SecondsPath"].startswith("$.config.timing."), name
            assert "Seconds" not in state, name
        if state["Type"] == "Task" and ".waitForTaskToken" in state["Resource"]:
            assert state["TimeoutSecondsPath"].startswith("$.config.expectations."), name


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


# The properties that give a resource its physical name, where the template may set one.
NAME_PROPERTIES = (
    "Name",
    "AliasName",
    "LogGroupName",
    "StateMachineName",
    "FunctionName",
    "TableName",
    "BucketName",
    "TopicName",
    "QueueName",
    "RoleName",
    "AlarmName",
    "ScheduleName",
)


def test_no_schedule_has_a_fixed_name() -> None:
    """SAM names a ScheduleV2 schedule after its event unless OmitName is set, and a schedule's name
    is unique in its group: a second stack in the same account and region would then fail."""
    schedules = {
        logical_id: spec["Properties"]
        for logical_id, spec in transformed_template()["Resources"].items()
        if spec["Type"] == "AWS::Scheduler::Schedule"
    }

    assert sorted(schedules) == ["JanitorFunctionSweep", "LabStateMachineNightly"]
    for logical_id, properties in schedules.items():
        assert "Name" not in properties, logical_id


def test_the_schedules_keep_their_state_time_zone_input_and_retries() -> None:
    resources = transformed_template()["Resources"]
    nightly = resources["LabStateMachineNightly"]["Properties"]
    sweep = resources["JanitorFunctionSweep"]["Properties"]

    assert nightly["State"] == {"Fn::If": ["ScheduleIsEnabled", "ENABLED", "DISABLED"]}
    assert nightly["ScheduleExpressionTimezone"] == {"Ref": "ScheduleTimezone"}
    assert nightly["Target"]["Input"] == {"Ref": "ScheduleInput"}
    assert render(nightly["Target"]["RoleArn"]) == "<LabStateMachineNightlyRole.Arn>"
    assert json.loads(sweep["Target"]["Input"]) == {"action": "sweep"}
    assert render(sweep["Target"]["RoleArn"]) == "<JanitorFunctionSweepRole.Arn>"
    for schedule in (nightly, sweep):
        assert schedule["Target"]["RetryPolicy"] == {"MaximumRetryAttempts": 3}


def test_every_name_the_template_sets_is_its_stacks_own() -> None:
    """Two stacks deploy side by side in one account and region: a physical name the template
    sets carries the stack's name or a name CloudFormation gave another of the stack's resources."""
    resources = transformed_template()["Resources"]
    fixed = []
    for logical_id, spec in resources.items():
        for key in NAME_PROPERTIES:
            if key not in spec.get("Properties", {}):
                continue
            name = render(spec["Properties"][key])
            if "<AWS::StackName>" not in name and not any(f"<{other}" in name for other in resources):
                fixed.append(f"{logical_id}.{key} = {name}")

    assert fixed == []


def test_no_lab_state_may_hold_a_group_bigger_than_max_size_cap_allows() -> None:
    # A state the workflow hands on is validated without the deployed cap; its absolute bound
    # is the cap's own ceiling.
    from scalelab.contracts.run import GROUP_SIZE_LIMIT

    assert template()["Parameters"]["MaxSizeCap"]["MaxValue"] == GROUP_SIZE_LIMIT


def test_each_scaling_metric_defaults_to_a_parameter_whose_bounds_prepare_checks() -> None:
    from scalelab.contracts.scaling import METRICS
    from scalelab.core.settings import RunDefaults

    parameters = template()["Parameters"]
    environment = resource("PrepareRunFunction")["Properties"]["Environment"]["Variables"]
    for metric, spec in METRICS.items():
        parameter = parameters[spec.parameter]
        assert (parameter["MinValue"], parameter["MaxValue"]) == (spec.minimum, spec.maximum), metric
        assert spec.minimum <= parameter["Default"] <= spec.maximum, metric
        alias = RunDefaults.model_fields[spec.default_attribute].alias
        assert environment[alias] == {"Ref": spec.parameter}, metric
