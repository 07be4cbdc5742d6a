"""The stress: CPU on the lab's instances through SSM Run Command (never SSH), or for a network or
request signal the load state machine's HTTP load (``steps.load``); and its early stop.

Start sends ``AWS-RunShellScript`` with the checked-in ``stress.sh`` to the
group's InService instances that carry this run's tag, and to nothing else.
The burn ends by itself after the duration (the script bounds it with
``timeout``, and SSM's ``executionTimeout`` kills it a little later at the
latest), so a stop that never comes costs a bounded amount of CPU. Stop
cancels the command; one that already ended, or that SSM no longer knows, is
left alone.

A load is an execution of the load state machine named from the run id, written into the run's
ledger before it starts (so teardown finds it whatever happens next); a retried start finds it
already there. It ends by itself at the stress's end time; stop (and teardown) stop it earlier.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from botocore.exceptions import ClientError

from scalelab.contracts.resources import Kind
from scalelab.contracts.scaling import Scaling
from scalelab.contracts.stress import StartStressEvent, StartStressResult, StopStressEvent, StopStressResult
from scalelab.core.assets import asset_text
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import ForeignCommand, NoInstancesInService
from scalelab.core.naming import RUN_TAG, resource_names, run_of_load_execution, tag_dict
from scalelab.core.observability import logger
from scalelab.core.settings import LoadSettings
from scalelab.resources.kinds import execution_name_of, stop_load_execution
from scalelab.steps.load import plan_load
from scalelab.store.runs import RunTable

STRESS_SCRIPT = "stress.sh"
DURATION_TOKEN = "__SCALELAB_STRESS_SECONDS__"  # noqa: S105 - a placeholder, not a password
# SSM kills the script's process group this long after the duration, should the
# script's own bounds (stress-ng --timeout, then coreutils timeout) both fail.
EXECUTION_GRACE_SECONDS = 60
# A command not delivered to an instance within this long never runs there:
# a stress test starting later than this would no longer time the scale-out.
DELIVERY_TIMEOUT_SECONDS = 300
DOCUMENT_NAME = "AWS-RunShellScript"
# Command statuses after which nothing runs any more, and the one on the way there.
FINISHED_STATUSES = frozenset({"Success", "Cancelled", "Failed", "TimedOut"})
CANCELLING = "Cancelling"
NOT_FOUND = "NotFound"


class _Command(NamedTuple):
    status: str
    comment: str


def render_stress_script(duration_seconds: int) -> str:
    """``stress.sh`` with its duration filled in."""
    if isinstance(duration_seconds, bool) or not isinstance(duration_seconds, int) or duration_seconds < 1:
        raise ValueError(f"the stress duration must be whole seconds >= 1, not {duration_seconds!r}")
    script = asset_text(STRESS_SCRIPT)
    if DURATION_TOKEN not in script:
        raise RuntimeError(f"{STRESS_SCRIPT} has lost its {DURATION_TOKEN} placeholder")
    return script.replace(DURATION_TOKEN, str(duration_seconds))


def command_comment(run_id: str) -> str:
    """The comment every stress command of ``run_id`` carries (SSM allows 100 characters)."""
    return f"scalelab CPU stress, run {run_id}"[:100]


def _in_service_instances(group_name: str) -> list[str]:
    """Instances of the group in the InService lifecycle state; none when the group does not exist."""
    paginator = client("autoscaling").get_paginator("describe_auto_scaling_groups")
    return [
        instance["InstanceId"]
        for page in paginator.paginate(AutoScalingGroupNames=[group_name])
        for group in page["AutoScalingGroups"]
        for instance in group.get("Instances", [])
        if instance.get("LifecycleState") == "InService"
    ]


def _instance_runs(instance_ids: list[str]) -> dict[str, str | None]:
    """Each instance's ``scalelab:run`` tag (None when it has none)."""
    paginator = client("ec2").get_paginator("describe_instances")
    return {
        instance["InstanceId"]: tag_dict(instance.get("Tags")).get(RUN_TAG)
        for page in paginator.paginate(InstanceIds=instance_ids)
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    }


def _run_instances(group_name: str, run_id: str) -> list[str]:
    in_service = _in_service_instances(group_name)
    if not in_service:
        return []
    runs = _instance_runs(in_service)
    mine = sorted(instance for instance, tagged in runs.items() if tagged == run_id)
    skipped = {instance: tagged for instance, tagged in runs.items() if tagged != run_id}
    if skipped:
        logger.warning(
            "skipped InService instances not tagged for this run",
            extra={"group": group_name, "skipped": skipped},
        )
    return mine


def _desired_capacity(group_name: str) -> int:
    groups = client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])
    found = groups["AutoScalingGroups"]
    return int(found[0]["DesiredCapacity"]) if found else 0


def execution_arn(state_machine_arn: str, execution_name: str) -> str:
    prefix, name = state_machine_arn.rsplit(":stateMachine:", 1)
    return f"{prefix}:execution:{name}:{execution_name}"


def start_stress(
    event: StartStressEvent, load: LoadSettings | None = None, table: RunTable | None = None
) -> StartStressResult:
    """Stress the group's InService instances of this run: the CPU burn for cpu (its command id),
    the load state machine for the other signals (its execution's ARN and the plan)."""
    logger.append_keys(run_id=event.run_id)
    group = event.auto_scaling_group_name
    instance_ids = _run_instances(group, event.run_id)
    if not instance_ids:
        raise NoInstancesInService(
            f"Auto Scaling group {group} has no InService instance tagged {RUN_TAG}={event.run_id}, "
            "so no stress was started; check that the group exists, that its instances passed "
            "their health checks (WaitHealthy) and that the group propagates the run tag at launch"
        )
    if event.scaling is not None and event.scaling.metric != "cpu":
        if load is None or table is None:
            raise RuntimeError("a network or request load needs the load settings and the run table")
        return _start_load(event, event.scaling, instance_ids, load, table)
    script = render_stress_script(event.duration_seconds)
    response = client("ssm").send_command(
        DocumentName=DOCUMENT_NAME,
        InstanceIds=instance_ids,
        Parameters={
            "commands": script.splitlines(),
            "executionTimeout": [str(event.duration_seconds + EXECUTION_GRACE_SECONDS)],
        },
        TimeoutSeconds=DELIVERY_TIMEOUT_SECONDS,
        Comment=command_comment(event.run_id),
        # Every instance starts at once, and one failing does not stop the others.
        MaxConcurrency="100%",
        MaxErrors="100%",
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": False},
    )
    command_id: str = response["Command"]["CommandId"]
    logger.info(
        "stress command sent",
        extra={
            "command_id": command_id,
            "group": group,
            "instance_ids": instance_ids,
            "duration_seconds": event.duration_seconds,
        },
    )
    return StartStressResult(
        command_id=command_id,
        instance_ids=instance_ids,
        duration_seconds=event.duration_seconds,
        started_at=utc_iso(),
    )


def _start_load(
    event: StartStressEvent,
    scaling: Scaling,
    instance_ids: list[str],
    settings: LoadSettings,
    table: RunTable,
) -> StartStressResult:
    plan = plan_load(
        run_id=event.run_id,
        scaling=scaling,
        desired_capacity=_desired_capacity(event.auto_scaling_group_name),
        # The event's validator made sure both are there for a load.
        base_url=f"http://{event.load_balancer_dns_name}",
        health_path=event.health_path or "",
        duration_seconds=event.duration_seconds,
        settings=settings,
    )
    name = resource_names(event.run_id).load_execution
    arn = execution_arn(settings.state_machine_arn, name)
    # Into the ledger before it exists: teardown of an execution that never started is harmless.
    table.record_resource(event.run_id, Kind.LOAD_EXECUTION, arn)
    try:
        client("stepfunctions").start_execution(
            stateMachineArn=settings.state_machine_arn,
            name=name,
            input=json.dumps({"plan": plan.model_dump(mode="json"), "round": 0}),
        )
    except ClientError as exc:
        # A retried start (another invocation got there first): the load runs already.
        if error_code(exc) != "ExecutionAlreadyExists":
            raise
        logger.info("load execution already started", extra={"execution_arn": arn})
    logger.info(
        "load started",
        extra={"execution_arn": arn, "group": event.auto_scaling_group_name, **plan.model_dump(mode="json")},
    )
    return StartStressResult(
        command_id=None,
        instance_ids=instance_ids,
        duration_seconds=event.duration_seconds,
        started_at=plan.started_at,
        load_execution_arn=arn,
        load=plan,
    )


def _command(command_id: str) -> _Command | None:
    """The command's status and comment, or None when SSM does not know it (or no longer)."""
    try:
        commands = client("ssm").list_commands(CommandId=command_id)["Commands"]
    except ClientError as exc:
        if error_code(exc) == "InvalidCommandId":
            return None
        raise
    if not commands:
        return None
    return _Command(status=commands[0]["Status"], comment=commands[0].get("Comment", ""))


def _stop_load(run_id: str, arn: str) -> StopStressResult:
    if run_of_load_execution(execution_name_of(arn)) != run_id:
        raise ForeignCommand(
            f"execution {arn} is not run {run_id}'s load, so it was not stopped; "
            "pass the load_execution_arn that this run's StartStress returned"
        )
    try:
        status = client("stepfunctions").describe_execution(executionArn=arn)["status"]
    except ClientError as exc:
        if error_code(exc) != "ExecutionDoesNotExist":
            raise
        logger.info("load execution unknown: nothing to stop", extra={"execution_arn": arn})
        return StopStressResult(command_id=None, cancelled=False, status=NOT_FOUND, load_execution_arn=arn)
    if status != "RUNNING":
        logger.info("load already ended: nothing to stop", extra={"execution_arn": arn, "status": status})
        return StopStressResult(command_id=None, cancelled=False, status=status, load_execution_arn=arn)
    stop_load_execution(arn, "StopStress: the run has what it needed from the load")
    status = client("stepfunctions").describe_execution(executionArn=arn)["status"]
    logger.info("load stopped", extra={"execution_arn": arn, "status": status})
    return StopStressResult(command_id=None, cancelled=True, status=status, load_execution_arn=arn)


def stop_stress(event: StopStressEvent) -> StopStressResult:
    """Cancel the stress command, or stop the load, if it still runs; harmless when it ended or is unknown."""
    logger.append_keys(run_id=event.run_id)
    if event.load_execution_arn is not None:
        return _stop_load(event.run_id, event.load_execution_arn)
    command_id = event.command_id
    if command_id is None:
        logger.info("no stress command or load was started: nothing to stop")
        return StopStressResult(command_id=None, cancelled=False, status=NOT_FOUND)
    found = _command(command_id)
    if found is None:
        logger.info("stress command unknown to SSM: nothing to cancel", extra={"command_id": command_id})
        return StopStressResult(command_id=command_id, cancelled=False, status=NOT_FOUND)
    if found.comment != command_comment(event.run_id):
        raise ForeignCommand(
            f"SSM command {command_id} was not sent for run {event.run_id} "
            f"(its comment is {found.comment!r}), so it was not cancelled; "
            "pass the command_id that this run's StartStress returned"
        )
    if found.status in FINISHED_STATUSES or found.status == CANCELLING:
        logger.info(
            "stress command already ended: nothing to cancel",
            extra={"command_id": command_id, "status": found.status},
        )
        return StopStressResult(command_id=command_id, cancelled=False, status=found.status)
    try:
        client("ssm").cancel_command(CommandId=command_id)
    except ClientError as exc:
        if error_code(exc) != "InvalidCommandId":
            raise
        logger.info("stress command vanished before it was cancelled", extra={"command_id": command_id})
        return StopStressResult(command_id=command_id, cancelled=False, status=NOT_FOUND)
    after = _command(command_id)
    status = after.status if after is not None else CANCELLING
    logger.info("stress command cancelled", extra={"command_id": command_id, "status": status})
    return StopStressResult(command_id=command_id, cancelled=True, status=status)
