"""CPU stress on the lab's instances through SSM Run Command (never SSH), and its early stop.

Start sends ``AWS-RunShellScript`` with the checked-in ``stress.sh`` to the
group's InService instances that carry this run's tag, and to nothing else.
The burn ends by itself after the duration (the script bounds it with
``timeout``, and SSM's ``executionTimeout`` kills it a little later at the
latest), so a stop that never comes costs a bounded amount of CPU. Stop
cancels the command; one that already ended, or that SSM no longer knows, is
left alone.
"""

from __future__ import annotations

from typing import NamedTuple

from botocore.exceptions import ClientError

from scalelab.contracts.stress import StartStressEvent, StartStressResult, StopStressEvent, StopStressResult
from scalelab.core.assets import asset_text
from scalelab.core.aws import client, error_code
from scalelab.core.clock import utc_iso
from scalelab.core.errors import ForeignCommand, NoInstancesInService
from scalelab.core.naming import RUN_TAG, tag_dict
from scalelab.core.observability import logger

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


def start_stress(event: StartStressEvent) -> StartStressResult:
    """Send the CPU burn to the group's InService instances of this run; return the command id."""
    logger.append_keys(run_id=event.run_id)
    group = event.auto_scaling_group_name
    instance_ids = _run_instances(group, event.run_id)
    if not instance_ids:
        raise NoInstancesInService(
            f"Auto Scaling group {group} has no InService instance tagged {RUN_TAG}={event.run_id}, "
            "so no stress command was sent; check that the group exists, that its instances passed "
            "their health checks (WaitHealthy) and that the group propagates the run tag at launch"
        )
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


def stop_stress(event: StopStressEvent) -> StopStressResult:
    """Cancel the stress command if it still runs; harmless when it ended or is unknown."""
    logger.append_keys(run_id=event.run_id)
    command_id = event.command_id
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
