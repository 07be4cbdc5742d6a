"""The load's execution: StartStress starts it named from the run id and records it in the ledger
first, a retried start finds it, StopStress stops it, and teardown and the janitor's sweep stop it
and count it removed. moto runs no definition here, so an execution stays RUNNING until stopped."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from scalelab.contracts.base import parse_event
from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.contracts.scaling import Scaling
from scalelab.contracts.stress import StartStressEvent, StopStressEvent
from scalelab.core.errors import ForeignCommand, InvalidInput
from scalelab.core.settings import JanitorSettings, LoadSettings
from scalelab.steps.janitor import sweep
from scalelab.steps.stress import start_stress, stop_stress
from scalelab.steps.teardown import teardown_lab
from scalelab.store.runs import RunTable
from tests.support.account import run_group

RUN = "load-0001"
GROUP = f"scalelab-{RUN}"
DNS_NAME = "scalelab-load-0001-1234.us-east-1.elb.amazonaws.com"
WAITING = json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}})


def _state_machine(name: str) -> str:
    arn: str = boto3.client("stepfunctions").create_state_machine(
        name=name, definition=WAITING, roleArn="arn:aws:iam::123456789012:role/scalelab-test"
    )["stateMachineArn"]
    return arn


@pytest.fixture
def instances(account: None) -> list[str]:
    """The run's group of two, its instances tagged for the run."""
    return run_group(GROUP, RUN)


@pytest.fixture
def load_settings(account: None) -> LoadSettings:
    return LoadSettings(
        state_machine_arn=_state_machine("scalelab-LoadStateMachine-TEST"),
        requests_per_second_cap=100,
        bytes_per_second_cap=5_000_000,
        workers_cap=10,
        round_seconds=60,
    )


@pytest.fixture
def recorded_run(run_table: RunTable) -> RunTable:
    """The run has a record (Prepare made it), so its ledger can take the load."""
    run_table.start_run(RUN, "default", {}, 1_000.0, RUN)
    return run_table


def start(settings: LoadSettings, table: RunTable, metric: str = "request_count") -> Any:
    event = StartStressEvent(
        run_id=RUN,
        auto_scaling_group_name=GROUP,
        duration_seconds=600,
        scaling=Scaling(metric=metric, target=600 if metric == "request_count" else 5_000_000),  # type: ignore[arg-type]
        load_balancer_dns_name=DNS_NAME,
        health_path="/home",
    )
    return start_stress(event, settings, table)


def status(arn: str) -> str:
    found: str = boto3.client("stepfunctions").describe_execution(executionArn=arn)["status"]
    return found


def test_a_request_load_starts_the_load_machine_named_from_the_run_and_recorded_in_the_ledger(
    instances: list[str], load_settings: LoadSettings, recorded_run: RunTable
) -> None:

    result = start(load_settings, recorded_run)

    assert result.command_id is None
    assert result.instance_ids == instances
    assert result.load_execution_arn.endswith(
        f":execution:scalelab-LoadStateMachine-TEST:scalelab-{RUN}-load"
    )
    assert status(result.load_execution_arn) == "RUNNING"
    started = boto3.client("stepfunctions").describe_execution(executionArn=result.load_execution_arn)
    plan = json.loads(started["input"])["plan"]
    assert (plan["url"], plan["requests_per_second"]) == (f"http://{DNS_NAME}/home", 40.0)
    assert json.loads(started["input"])["round"] == 0
    record = recorded_run.load_run(RUN)
    assert record is not None
    assert record.resources[Kind.LOAD_EXECUTION] == result.load_execution_arn


def test_a_retried_start_finds_the_load_already_running(
    instances: list[str], load_settings: LoadSettings, recorded_run: RunTable
) -> None:
    first = start(load_settings, recorded_run)

    again = start(load_settings, recorded_run)

    assert again.load_execution_arn == first.load_execution_arn
    executions = boto3.client("stepfunctions").list_executions(
        stateMachineArn=load_settings.state_machine_arn
    )
    assert len(executions["executions"]) == 1


def test_stop_stress_stops_the_load_and_a_second_stop_is_harmless(
    instances: list[str], load_settings: LoadSettings, recorded_run: RunTable
) -> None:
    arn = start(load_settings, recorded_run).load_execution_arn

    stopped = stop_stress(StopStressEvent(run_id=RUN, load_execution_arn=arn))
    again = stop_stress(StopStressEvent(run_id=RUN, load_execution_arn=arn))

    assert (stopped.cancelled, stopped.status) == (True, "ABORTED")
    assert status(arn) == "ABORTED"
    assert (again.cancelled, again.status) == (False, "ABORTED")


def test_stop_stress_refuses_another_runs_load(
    instances: list[str], load_settings: LoadSettings, recorded_run: RunTable
) -> None:
    arn = start(load_settings, recorded_run).load_execution_arn

    with pytest.raises(ForeignCommand, match="is not run other-run's load"):
        stop_stress(StopStressEvent(run_id="other-run", load_execution_arn=arn))
    assert status(arn) == "RUNNING"


def test_teardown_stops_the_load_and_records_it_removed(
    instances: list[str], load_settings: LoadSettings, recorded_run: RunTable
) -> None:
    arn = start(load_settings, recorded_run).load_execution_arn

    result = teardown_lab(RUN, recorded_run, now=2_000.0)

    assert ResourceRef(kind=Kind.LOAD_EXECUTION, id=arn) in result.removed
    assert status(arn) == "ABORTED"
    record = recorded_run.load_run(RUN)
    assert record is not None
    assert Kind.LOAD_EXECUTION not in record.resources
    assert record.removed[Kind.LOAD_EXECUTION].id == arn


def test_the_sweep_stops_a_load_its_ledger_no_longer_lists(
    instances: list[str], load_settings: LoadSettings, recorded_run: RunTable
) -> None:
    arn = start(load_settings, recorded_run).load_execution_arn
    # The ledger lost it (written by hand, say): only the running execution tells of it.
    recorded_run.forget_resource(RUN, Kind.LOAD_EXECUTION, arn, 1_500.0)
    janitor = JanitorSettings(
        state_machine_arn=_state_machine("scalelab-LabStateMachine-TEST"),
        grace_seconds=0,
        cleanup_poll_seconds=1,
        lock_lease_seconds=14_400,
        load_state_machine_arn=load_settings.state_machine_arn,
    )

    result = sweep(recorded_run, janitor, now=2_000.0)

    assert status(arn) == "ABORTED"
    assert ResourceRef(kind=Kind.LOAD_EXECUTION, id=arn) in [removed.resource for removed in result.removed]


def test_a_load_without_the_load_balancer_is_refused_naming_what_to_give() -> None:
    event = {
        "run_id": RUN,
        "auto_scaling_group_name": GROUP,
        "duration_seconds": 600,
        "scaling": {"metric": "network_out", "target": 5_000_000},
    }

    with pytest.raises(InvalidInput, match="a network_out load is sent through the load balancer: give "):
        parse_event(event, StartStressEvent, "StartStress event")


def test_stop_stress_refuses_an_arn_that_is_no_execution() -> None:
    with pytest.raises(InvalidInput, match="load_execution_arn"):
        parse_event(
            {"run_id": RUN, "load_execution_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:x"},
            StopStressEvent,
            "StopStress event",
        )
