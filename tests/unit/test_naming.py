"""Names and tags: derived from the execution name, unique, within AWS limits."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from scalelab.core.naming import LAB_TAG, RUN_TAG, elb_name, resource_names, run_id_from_execution, run_tags

# Step Functions execution names: 1-80 characters (any, in practice mostly [A-Za-z0-9_-]).
execution_names = st.text(min_size=1, max_size=80)
ELB_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$")


def test_a_plain_execution_name_is_the_run_id() -> None:
    assert run_id_from_execution("nightly-2026-11-25") == "nightly-2026-11-25"


def test_the_run_id_is_stable_for_an_execution() -> None:
    assert run_id_from_execution("My Run #1") == run_id_from_execution("My Run #1")


def test_names_that_clean_to_the_same_text_get_different_run_ids() -> None:
    assert run_id_from_execution("Run_1") != run_id_from_execution("run-1")


def test_names_that_differ_only_in_case_get_different_run_ids() -> None:
    # Step Functions execution names are case-sensitive: two executions, two runs.
    assert run_id_from_execution("Victim-X") != run_id_from_execution("victim-X")
    assert run_id_from_execution("victim-X") != run_id_from_execution("victim-x")


@given(execution_names, execution_names)
def test_different_execution_names_never_share_a_run_id(first: str, second: str) -> None:
    if first != second:
        assert run_id_from_execution(first) != run_id_from_execution(second)


@given(execution_names)
def test_every_execution_name_gives_a_valid_run_id(name: str) -> None:
    run_id = run_id_from_execution(name)

    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", run_id)
    assert not run_id.endswith("-")


@given(execution_names)
def test_every_resource_name_fits_its_aws_limit(name: str) -> None:
    names = resource_names(run_id_from_execution(name))

    assert ELB_NAME.fullmatch(names.load_balancer)
    assert ELB_NAME.fullmatch(names.target_group)
    assert len(names.launch_template) <= 128
    assert len(names.auto_scaling_group) <= 255
    assert len(names.alb_security_group) <= 255
    for value in names.model_dump().values():
        assert value.startswith("scalelab-")


@given(execution_names, execution_names)
def test_different_runs_get_different_load_balancer_names(first: str, second: str) -> None:
    first_id, second_id = run_id_from_execution(first), run_id_from_execution(second)
    if first_id != second_id:
        assert elb_name(first_id) != elb_name(second_id)


def test_tags_name_the_run_and_the_lab() -> None:
    assert run_tags("r1", "team-a") == {RUN_TAG: "r1", LAB_TAG: "team-a"}
    assert RUN_TAG == "scalelab:run"
    assert LAB_TAG == "scalelab:lab"
