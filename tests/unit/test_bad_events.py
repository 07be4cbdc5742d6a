"""Events that crashed a function, found by tests/contract/test_fuzz_inputs.py: each is now a named rejection.

Before, each of these got past its model and failed later with an error
naming no field (ValueError, OverflowError, a botocore error), some after
resources had been created.
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import BaseModel

from scalelab.contracts.base import parse_event
from scalelab.contracts.judge import JudgeEvent
from scalelab.contracts.run import PrepareEvent, RunConfig
from scalelab.contracts.scaleout import AwaitScaleOutEvent
from scalelab.contracts.scaling_event import AutoScalingEvent
from scalelab.contracts.targets import CheckTargetsEvent
from scalelab.core.errors import InvalidInput
from scalelab.core.settings import RunDefaults
from scalelab.steps.prepare import prepare_run
from scalelab.store.runs import RunTable
from tests.support.events import event_for


def changed(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, name = path.split(".")
    target = event
    for parent in parents:
        target = target[parent]
    target[name] = value
    return event


def rejection(event: Any, model: type[BaseModel]) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_event(event, model, "event")
    return str(caught.value)


def test_a_run_input_that_is_not_an_object_is_rejected_and_recorded(
    run_table: RunTable, run_defaults: RunDefaults
) -> None:
    # Was rejected as a malformed Prepare event, before Prepare could record the run.
    with pytest.raises(InvalidInput, match=r"invalid run input: expected a JSON object, got list"):
        prepare_run(PrepareEvent(execution_name="listed", input=["lab"]), run_table, run_defaults)

    record = run_table.load_run("listed")
    assert record is not None
    assert record.status == "rejected"
    assert run_table.lock_holder("default") is None


@pytest.mark.parametrize(
    "path",
    [
        "config.started_at",
        "provision.provisioned_at",
        "healthy.checked_at",
        "stress.started_at",
        "scale_out.launched_at",
        "new_healthy.checked_at",
    ],
)
def test_a_judge_state_with_a_timestamp_judge_cannot_read_names_it(path: str) -> None:
    # Was a ValueError from datetime.fromisoformat while timing the phases.
    event = changed(event_for("JudgeRunFunction"), path, "yesterday")

    assert f"{path}: 'yesterday' is not an ISO-8601 timestamp" in rejection(event, JudgeEvent)


@pytest.mark.parametrize(
    ("model", "logical_id", "path"),
    [
        (AwaitScaleOutEvent, "AwaitScaleOutFunction", "stress_started_at"),
        (CheckTargetsEvent, "CheckTargetsFunction", "since"),
        (AutoScalingEvent, "OnScalingEventFunction", "time"),
        (AutoScalingEvent, "OnScalingEventFunction", "detail.StartTime"),
    ],
)
@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00+23:59",  # before year 1 in UTC: OverflowError converting it
        "9999-12-31T23:59:59-23:59",  # after year 9999 in UTC: OverflowError converting it
        "9999-12-31T23:00:00+00:00",  # its deadline was a ValueError (year 10000)
        "1969-12-31T23:59:59+00:00",
    ],
)
def test_a_time_no_run_can_have_is_rejected_naming_the_field(
    model: type[BaseModel], logical_id: str, path: str, moment: str
) -> None:
    event = changed(event_for(logical_id), path, moment)

    assert f"{path}: {moment} is not a time a run can have" in rejection(event, model)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        # Was written into the instances' user data, where $(...) runs as root at boot.
        ("lab.health_path", "/$(reboot)", "lab.health_path: String should match pattern"),
        # Was botocore's ParamValidationError.
        ("lab.app_port", -1, "lab.app_port: Input should be greater than or equal to 1024"),
        (
            "lab.scaling.target",
            float("nan"),
            "lab.scaling.target: nan for cpu is outside 1 to 99",
        ),
        # Was SubnetNotFound, once four resources existed.
        ("lab.subnet_ids", [], "lab.subnet_ids: List should have at least 2 items"),
        ("lab.vpc_id", "vpc-123", "lab.vpc_id: String should match pattern"),
        ("lab.min_size", 5, "lab: desired_capacity (2) is below min_size (5)"),
        ("run_id", "Not A Run", "run_id: String should match pattern"),
        ("started_at", "soon", "started_at: 'soon' is not an ISO-8601 timestamp"),
    ],
)
def test_a_provision_config_aws_would_refuse_is_rejected_naming_the_field(
    path: str, value: Any, problem: str
) -> None:
    event = changed(event_for("ProvisionLabFunction"), path, value)

    assert problem in rejection(event, RunConfig)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        # Was created tagged for another run, then refused (ForeignResource) and left behind.
        ("tags.scalelab:run", "another-run", "tags: are not the tags Prepare derives from run_id"),
        # Was a ClientError: a tag specification needs a tag.
        ("tags", {}, "tags: are not the tags Prepare derives from run_id"),
        ("names.load_balancer", "not-the-runs", "names: are not the names Prepare derives from run_id"),
        ("run_id", "another-run", "names: are not the names Prepare derives from run_id 'another-run'"),
    ],
)
def test_a_config_whose_names_or_tags_are_not_its_runs_is_rejected(
    path: str, value: Any, problem: str
) -> None:
    event = changed(event_for("ProvisionLabFunction"), path, value)

    assert problem in rejection(event, RunConfig)


def test_an_auto_scaling_event_id_too_long_for_the_run_log_is_rejected() -> None:
    # Was DynamoDB's ValidationException: the log's sort key is limited to 1024 bytes.
    event = changed(event_for("OnScalingEventFunction"), "id", "x" * 1100)

    assert "id: String should have at most 128 characters" in rejection(event, AutoScalingEvent)
