"""The janitor: ended runs leave nothing behind, running and foreign runs are left alone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import ModuleType

import boto3
import pytest

from scalelab.contracts.base import parse_event
from scalelab.contracts.janitor import JanitorEvent, RunResource, SweepProblem
from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.contracts.run import RunConfig
from scalelab.core.errors import InvalidInput
from scalelab.core.naming import RUN_TAG
from scalelab.core.settings import JanitorSettings, ProvisionSettings
from scalelab.steps.janitor import close_run, execution_arn, sweep
from scalelab.steps.provision import provision_lab
from scalelab.store.runs import RunTable
from tests.conftest import TABLE_NAME, FakeLambdaContext
from tests.support.account import aws_fault, tagged_resources
from tests.unit.conftest import PrepareRun

RUN = "jan-0001"
STATE_MACHINE_NAME = "scalelab-LabStateMachine-TEST"
LOAD_STATE_MACHINE_NAME = "scalelab-LoadStateMachine-TEST"


@pytest.fixture
def settings(account: None) -> JanitorSettings:
    """The lab's state machine exists (executions are looked up in it); no grace period."""
    created = boto3.client("stepfunctions").create_state_machine(
        name=STATE_MACHINE_NAME,
        definition=json.dumps(
            {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}}
        ),
        roleArn="arn:aws:iam::123456789012:role/scalelab-test",
    )
    load = boto3.client("stepfunctions").create_state_machine(
        name=LOAD_STATE_MACHINE_NAME,
        definition=json.dumps(
            {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}}
        ),
        roleArn="arn:aws:iam::123456789012:role/scalelab-test",
    )
    return JanitorSettings(
        state_machine_arn=created["stateMachineArn"],
        grace_seconds=0,
        cleanup_poll_seconds=1,
        lock_lease_seconds=14_400,
        load_state_machine_arn=load["stateMachineArn"],
    )


def swept(kind: Kind, physical_id: str) -> RunResource:
    return RunResource(run_id=RUN, resource=ResourceRef(kind=kind, id=physical_id))


def _start_execution(settings: JanitorSettings, name: str) -> None:
    """An execution of the lab's state machine that stays RUNNING (moto runs no definition)."""
    boto3.client("stepfunctions").start_execution(stateMachineArn=settings.state_machine_arn, name=name)


def _stray_instance(config: RunConfig, run_id: str) -> str:
    """An instance carrying the run's tag outside any group, as a crashed launch could leave."""
    image = boto3.client("ec2").describe_images()["Images"][0]["ImageId"]
    reservation = boto3.client("ec2").run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=config.lab.subnet_ids[0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": RUN_TAG, "Value": run_id}]}],
    )
    instance_id: str = reservation["Instances"][0]["InstanceId"]
    return instance_id


def test_a_sweep_removes_what_an_ended_run_left_even_outside_its_ledger(
    lab: ProvisionResult, config: RunConfig, run_table: RunTable, settings: JanitorSettings
) -> None:
    stray = _stray_instance(config, RUN)
    # The ledger lost track of the load balancer and the group: the tags still lead to them.
    run_table.forget_resource(RUN, "load_balancer", lab.load_balancer_arn, 0)
    run_table.forget_resource(RUN, "auto_scaling_group", lab.auto_scaling_group_name, 0)

    result = sweep(run_table, settings)

    assert tagged_resources(RUN) == {}
    assert swept(Kind.INSTANCE, stray) in result.removed
    assert swept(Kind.LOAD_BALANCER, lab.load_balancer_arn) in result.removed
    assert swept(Kind.AUTO_SCALING_GROUP, lab.auto_scaling_group_name) in result.removed
    assert result.could_not_remove == []
    assert run_table.lock_holder("default") is None


def test_a_failing_ledger_teardown_does_not_stop_the_sweep(
    lab: ProvisionResult, run_table: RunTable, settings: JanitorSettings
) -> None:
    with aws_fault("elbv2", "DeleteLoadBalancer", "AccessDenied"):
        result = sweep(run_table, settings)

    assert result.could_not_remove == [
        SweepProblem(run_id=RUN, resource=None, reason="the ledger's teardown failed (AccessDenied)")
    ]
    assert swept(Kind.LOAD_BALANCER, lab.load_balancer_arn) in result.removed
    assert tagged_resources(RUN) == {}


def test_a_sweep_leaves_a_run_whose_execution_is_still_running(
    prepare: PrepareRun, provision_settings: ProvisionSettings, run_table: RunTable, settings: JanitorSettings
) -> None:
    config = prepare("jan-running")
    provision_lab(config, provision_settings, run_table)
    _start_execution(settings, "jan-running")

    result = sweep(run_table, settings)

    assert set(tagged_resources("jan-running")) >= {"auto_scaling_groups", "load_balancers", "instances"}
    assert result.removed == []
    assert result.skipped == ["jan-running: its execution is still running"]
    assert run_table.lock_holder("default") == "jan-running"


def test_a_sweep_leaves_a_run_younger_than_the_grace_period(
    lab: ProvisionResult, run_table: RunTable, settings: JanitorSettings
) -> None:
    patient = settings.model_copy(update={"grace_seconds": 3600})

    result = sweep(run_table, patient)

    assert set(tagged_resources(RUN)) >= {"auto_scaling_groups", "load_balancers"}
    assert result.skipped == [f"{RUN}: started less than 3600 s ago (the grace period)"]


def test_a_sweep_past_the_grace_period_removes_the_run(
    lab: ProvisionResult, run_table: RunTable, settings: JanitorSettings
) -> None:
    patient = settings.model_copy(update={"grace_seconds": 3600})

    sweep(run_table, patient, now=time.time() + 3601)

    assert tagged_resources(RUN) == {}


def test_a_sweep_never_touches_a_run_this_stack_has_no_record_of(
    config: RunConfig, run_table: RunTable, settings: JanitorSettings
) -> None:
    stranger = _stray_instance(config, "another-stacks-run")
    untagged = boto3.client("ec2").create_security_group(
        GroupName="bystander", Description="not scalelab's", VpcId=config.lab.vpc_id
    )

    result = sweep(run_table, settings)

    assert tagged_resources("another-stacks-run") == {"instances": [stranger]}
    assert boto3.client("ec2").describe_security_groups(GroupIds=[untagged["GroupId"]])["SecurityGroups"]
    assert result.removed == []
    assert result.skipped == [
        "another-stacks-run: no record in this stack's run table, so not this stack's run: left alone"
    ]


def test_a_sweep_releases_the_lock_of_an_ended_run_and_keeps_a_running_ones(
    prepare: PrepareRun, run_table: RunTable, settings: JanitorSettings
) -> None:
    prepare("jan-ended", {"lab": {"name": "ended-lab"}})
    prepare("jan-alive", {"lab": {"name": "alive-lab"}})
    _start_execution(settings, "jan-alive")

    result = sweep(run_table, settings)

    assert result.locks_released == ["ended-lab (held by jan-ended)"]
    assert run_table.lock_holder("ended-lab") is None
    assert run_table.lock_holder("alive-lab") == "jan-alive"


def test_close_notes_how_the_execution_ended_on_a_run_without_a_verdict(
    config: RunConfig, run_table: RunTable, settings: JanitorSettings
) -> None:
    result = close_run(RUN, "ABORTED", run_table, settings)

    record = run_table.load_run(RUN)
    assert result.had_record is True
    assert result.poll_seconds == 1
    assert record is not None
    assert record.status == "aborted"
    assert record.reason == "the execution ended ABORTED before a verdict; the janitor tore the lab down"


def test_close_keeps_a_verdict_already_recorded(
    config: RunConfig, run_table: RunTable, settings: JanitorSettings
) -> None:
    run_table.record_verdict(RUN, False, "no scale-out within 600 s", "s3://reports/x.json", time.time())

    close_run(RUN, "FAILED", run_table, settings)

    record = run_table.load_run(RUN)
    assert record is not None
    assert (record.status, record.reason) == ("failed", "no scale-out within 600 s")


def test_close_of_a_run_prepare_never_recorded_records_it(
    run_table: RunTable, settings: JanitorSettings
) -> None:
    result = close_run("never-prepared", "TIMED_OUT", run_table, settings)

    record = run_table.load_run("never-prepared")
    assert result.had_record is False
    assert record is not None
    assert record.status == "timed_out"
    assert (
        record.reason == "the execution ended TIMED_OUT before Prepare recorded the run; nothing was created"
    )


def test_a_close_without_the_execution_is_invalid_input_naming_it() -> None:
    with pytest.raises(InvalidInput, match=r"^invalid Janitor event: execution_name: Field required"):
        parse_event({"action": "close", "status": "ABORTED"}, JanitorEvent, "Janitor event")


def test_an_unknown_status_is_invalid_input_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"^invalid Janitor event: status: "):
        parse_event(
            {"action": "close", "execution_name": "x", "status": "SUCCEEDED"}, JanitorEvent, "Janitor event"
        )


def test_a_record_naming_no_execution_counts_as_running_until_its_lease_runs_out(
    lab: ProvisionResult, run_table: RunTable, settings: JanitorSettings
) -> None:
    # A record written before records named their execution.
    boto3.client("dynamodb").update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": f"RUN#{RUN}"}, "sk": {"S": "RUN"}},
        UpdateExpression="REMOVE execution_name",
    )

    during = sweep(run_table, settings)
    assert during.skipped == [f"{RUN}: its execution is still running"]
    assert set(tagged_resources(RUN)) >= {"auto_scaling_groups"}

    sweep(run_table, settings, now=time.time() + 14_401)
    assert tagged_resources(RUN) == {}


def test_the_execution_arn_is_built_from_the_state_machine_arn() -> None:
    arn = execution_arn("arn:aws:states:eu-west-1:111122223333:stateMachine:scalelab-Lab-X", "nightly-1")

    assert arn == "arn:aws:states:eu-west-1:111122223333:execution:scalelab-Lab-X:nightly-1"


def test_the_handler_with_the_templates_settings_closes_and_sweeps(
    lab: ProvisionResult,
    run_table: RunTable,
    settings: JanitorSettings,
    load_handler: Callable[[str], ModuleType],
    lambda_context: FakeLambdaContext,
) -> None:
    handler = load_handler("JanitorFunction")
    grace = handler.SETTINGS.grace_seconds

    closed = handler.lambda_handler(
        {"action": "close", "execution_name": RUN, "status": "FAILED"}, lambda_context
    )
    swept = handler.lambda_handler({"action": "sweep"}, lambda_context)

    assert json.loads(json.dumps([closed, swept])) == [closed, swept]
    assert closed["run_id"] == RUN
    record = run_table.load_run(RUN)
    assert record is not None
    assert record.status == "failed"
    # The template's grace period (an hour by default) keeps a run that has just started.
    assert swept["skipped"] == [f"{RUN}: started less than {grace} s ago (the grace period)"]
    assert set(tagged_resources(RUN)) >= {"auto_scaling_groups", "load_balancers"}
