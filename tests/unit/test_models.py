"""The run input: defaults from the template's Parameters, and every way it can be wrong."""

from __future__ import annotations

from typing import Any

import pytest

from scalelab.contracts.base import parse_event
from scalelab.contracts.run import RunInput
from scalelab.core.errors import InvalidInput
from scalelab.core.settings import RunDefaults
from tests.conftest import apply_function_environment
from tests.support.template import parameter_defaults


@pytest.fixture(autouse=True)
def _prepare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_function_environment(monkeypatch, "PrepareRunFunction")


def parse(raw: Any) -> RunInput:
    return parse_event(raw, RunInput, "run input", context=RunDefaults.from_env())


def rejection(raw: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse(raw)
    return str(caught.value)


def test_empty_input_takes_every_default_from_the_template_parameters() -> None:
    defaults = parameter_defaults()

    run = parse({})

    assert run.lab.name == defaults["LabName"]
    assert run.lab.instance_type == defaults["InstanceType"]
    assert (run.lab.min_size, run.lab.desired_capacity, run.lab.max_size) == (
        defaults["MinSize"],
        defaults["DesiredCapacity"],
        defaults["MaxSize"],
    )
    assert run.lab.app_port == 3005
    assert run.lab.health_path == "/home"
    assert run.lab.subnet_ids == []
    assert run.lab.launch_template is None
    assert run.stress.duration_seconds == defaults["StressDurationSeconds"]
    assert run.expectations.scale_out_within_seconds == defaults["ScaleOutWithinSeconds"]
    assert run.timing.poll_seconds == defaults["PollSeconds"]


def test_a_changed_parameter_changes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_function_environment(
        monkeypatch, "PrepareRunFunction", {"InstanceType": "t3.small", "StressDurationSeconds": 240}
    )

    run = parse({})

    assert run.lab.instance_type == "t3.small"
    assert run.stress.duration_seconds == 240


def test_given_fields_override_defaults() -> None:
    run = parse(
        {
            "lab": {"name": "team-a", "max_size": 5, "launch_template": {"name": "my-template"}},
            "stress": {"duration_seconds": 300},
        }
    )

    assert run.lab.name == "team-a"
    assert run.lab.max_size == 5
    assert run.lab.launch_template is not None
    assert run.lab.launch_template.version == "$Default"
    assert run.stress.duration_seconds == 300


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"lab": {"colour": "blue"}}, "lab.colour", "Extra inputs are not permitted"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
        ({"lab": {"max_size": "4"}}, "lab.max_size", "valid integer"),
        ({"lab": {"min_size": True}}, "lab.min_size", "valid integer"),
        ({"lab": {"instance_type": "p5.48xlarge"}}, "lab.instance_type", "not in the allowed instance types"),
        ({"lab": {"max_size": 99}}, "lab.max_size", "MaxSizeCap"),
        ({"lab": {"app_port": 22}}, "lab.app_port", "greater than or equal to 1024"),
        ({"lab": {"health_path": "home"}}, "lab.health_path", "pattern"),
        ({"lab": {"health_path": "/$(reboot)"}}, "lab.health_path", "pattern"),
        ({"lab": {"name": "Has Spaces"}}, "lab.name", "pattern"),
        ({"lab": {"subnet_ids": ["vpc-123"]}}, "lab.subnet_ids", "not subnet ids"),
        ({"lab": {"launch_template": {"version": "2"}}}, "lab.launch_template.name", "Field required"),
        ({"stress": {"duration_seconds": 100_000}}, "stress.duration_seconds", "StressDurationCapSeconds"),
        # Issue 15: shorter than the scale-out alarm's 3 one-minute datapoints, it could never pass.
        (
            {"stress": {"duration_seconds": 179}},
            "stress.duration_seconds",
            "scale-out alarm needs to fire (180 s",
        ),
        (
            {"expectations": {"healthy_within_seconds": 0}},
            "expectations.healthy_within_seconds",
            "greater than or equal to 1",
        ),
        ({"timing": {"poll_seconds": 1.5}}, "timing.poll_seconds", "valid integer"),
        ({"lab": []}, "lab", "valid dictionary"),
    ],
)
def test_each_bad_field_is_named_with_what_is_wrong(raw: dict[str, Any], field: str, words: str) -> None:
    message = rejection(raw)

    assert message.startswith("invalid run input: ")
    assert f"{field}: " in message
    assert words in message


def test_impossible_sizes_are_named_together() -> None:
    message = rejection({"lab": {"min_size": 3, "desired_capacity": 2, "max_size": 1}})

    assert "desired_capacity (2) is below min_size (3)" in message
    assert "max_size (1) is below desired_capacity (2)" in message


def test_a_group_without_room_to_scale_out_is_rejected() -> None:
    assert "no room to scale out" in rejection({"lab": {"desired_capacity": 4, "max_size": 4}})


def test_one_message_names_every_bad_field() -> None:
    message = rejection(
        {
            "lab": {"instance_type": "x1.32xlarge", "max_size": "big", "typo": 1},
            "stress": {"duration_seconds": -1},
            "timing": {"poll_seconds": "soon"},
        }
    )

    for field in (
        "lab.instance_type",
        "lab.max_size",
        "lab.typo",
        "stress.duration_seconds",
        "timing.poll_seconds",
    ):
        assert f"{field}: " in message


@pytest.mark.parametrize("raw", [None, [], "lab", 42])
def test_input_that_is_not_an_object_is_rejected(raw: Any) -> None:
    assert "expected a JSON object" in rejection(raw)


def test_deadlines_adding_up_past_the_cap_name_the_parameter() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_event(
            {
                "expectations": {
                    "healthy_within_seconds": 5000,
                    "scale_out_within_seconds": 5000,
                    "new_instance_healthy_within_seconds": 1000,
                }
            },
            RunInput,
            "run input",
            context=RunDefaults.from_env(),
        )

    assert "expectations: the 3 deadlines add up to 11000 s, above the RunDeadlinesCapSeconds" in str(
        raised.value
    )


def test_several_bad_fields_are_all_named_in_one_message() -> None:
    # Issue 15 #7: the sizes were checked only once every field was valid, so a bad name hid them.
    message = rejection({"lab": {"name": "Bad Name!", "min_size": 3, "desired_capacity": 2, "max_size": 1}})

    assert "lab.name: String should match pattern" in message
    assert (
        "lab.max_size: desired_capacity (2) is below min_size (3); max_size (1) is below desired_capacity (2)"
        in message
    )
