"""Events that crashed a function, found by tests/contract/test_fuzz_inputs.py: each is now a named rejection.

Before, each of these got past its model and failed later with an error
naming no field (ValueError, OverflowError, a botocore error), some after
resources had been created.
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import BaseModel

from scalelab.errors import InvalidInput
from scalelab.ledger import RunTable
from scalelab.models import PrepareEvent, parse_event
from scalelab.prepare import prepare_run
from scalelab.scaleout import AutoScalingEvent, AwaitScaleOutEvent
from scalelab.targets import CheckTargetsEvent
from scalelab.verdict import JudgeEvent
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


def test_a_run_input_that_is_not_an_object_is_rejected_and_recorded(run_table: RunTable) -> None:
    # Was rejected as a malformed Prepare event, before Prepare could record the run.
    with pytest.raises(InvalidInput, match=r"invalid run input: expected a JSON object, got list"):
        prepare_run(PrepareEvent(execution_name="listed", input=["lab"]), run_table)

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
