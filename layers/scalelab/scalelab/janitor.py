"""The janitor: cleanup that does not depend on the run's own execution.

Two jobs. ``close_run`` is the first step of the cleanup state machine, which
an EventBridge rule starts when a lab execution ends ABORTED, TIMED_OUT or
FAILED: it notes on the run record how the execution ended (the state machine
then loops the teardown function). ``sweep`` runs on a schedule: it finds every
resource tagged ``scalelab:run`` (through the Resource Groups Tagging API, and
the EC2 and Auto Scaling APIs for instances and groups), so what a ledger
missed is found too, and removes those of runs that have ended and are older
than the grace period. Only resources whose tag names a run recorded in this
stack's table are touched, and each deletion checks the tag again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Literal, Self

from botocore.exceptions import ClientError
from pydantic import Field, model_validator

from scalelab.aws import client, error_code
from scalelab.ledger import RunRecord, RunTable
from scalelab.models import InputModel, OutputModel, TeardownResult
from scalelab.naming import RUN_TAG, run_id_from_execution, tag_dict
from scalelab.observability import logger
from scalelab.settings import JanitorSettings
from scalelab.teardown import Outcome, delete_owned, teardown_lab

ENDED_ABNORMALLY = ("ABORTED", "TIMED_OUT", "FAILED")
# The Tagging API's names for the types a run creates (instances and groups are
# listed through their own APIs, which can leave out terminated instances).
TAGGED_TYPES = (
    "ec2:security-group",
    "ec2:launch-template",
    "elasticloadbalancing:loadbalancer",
    "elasticloadbalancing:targetgroup",
    "elasticloadbalancing:listener",
)
# Dependency order, as in teardown: groups and instances first, security groups last
# (the instances' group before the load balancer's, which it references).
SWEEP_ORDER = (
    "auto_scaling_group",
    "instance",
    "listener",
    "load_balancer",
    "target_group",
    "launch_template",
    "instance_security_group",
    "security_group",
    "alb_security_group",
)
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


class JanitorEvent(InputModel):
    """``{"action": "sweep"}`` from the schedule, or ``{"action": "close", ...}`` from the cleanup
    state machine with the ended execution's name and status."""

    action: Literal["sweep", "close"]
    execution_name: str | None = Field(default=None, min_length=1, max_length=80)
    status: Literal["ABORTED", "TIMED_OUT", "FAILED"] | None = None

    @model_validator(mode="after")
    def _close_names_the_execution(self) -> Self:
        if self.action == "close" and (self.execution_name is None or self.status is None):
            raise ValueError("a close needs execution_name and status (ABORTED, TIMED_OUT or FAILED)")
        return self


class CloseResult(OutputModel):
    run_id: str
    execution_status: str
    # False when Prepare never recorded the run (the close made its record).
    had_record: bool
    poll_seconds: int


class SweepResult(OutputModel):
    removed: list[str]
    could_not_remove: list[str]
    skipped: list[str]
    locks_released: list[str]


def close_run(
    execution_name: str,
    execution_status: str,
    table: RunTable,
    settings: JanitorSettings,
    now: float | None = None,
) -> CloseResult:
    """Note on the run record how its execution ended; the cleanup state machine tears it down next,
    waiting ``poll_seconds`` between passes."""
    now = time.time() if now is None else now
    run_id = run_id_from_execution(execution_name)
    logger.append_keys(run_id=run_id)
    had_record = table.record_execution_end(run_id, execution_name, execution_status, now)
    logger.info("execution ended", extra={"execution_status": execution_status, "had_record": had_record})
    return CloseResult(
        run_id=run_id,
        execution_status=execution_status,
        had_record=had_record,
        poll_seconds=settings.cleanup_poll_seconds,
    )


def execution_arn(state_machine_arn: str, execution_name: str) -> str:
    prefix, name = state_machine_arn.rsplit(":stateMachine:", 1)
    return f"{prefix}:execution:{name}:{execution_name}"


def still_running(record: RunRecord, settings: JanitorSettings, now: float) -> bool:
    """Whether the run's execution is RUNNING, as Step Functions says (not a guess from the record).
    A record that names no execution (written before records did) counts as running until the
    lab's lease would have run out."""
    if record.execution_name is None:
        return (record.started_at or 0) + settings.lock_lease_seconds > now
    try:
        described = client("stepfunctions").describe_execution(
            executionArn=execution_arn(settings.state_machine_arn, record.execution_name)
        )
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return False
        raise
    return bool(described["status"] == "RUNNING")


def tagged_resources() -> dict[str, set[tuple[str, str]]]:
    """Every resource tagged ``scalelab:run`` in the region, by run id: ``(kind, id)`` pairs."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    every = (*_tagged_through_the_tagging_api(), *_tagged_groups(), *_tagged_instances(), *_tagged_ec2())
    for run_id, kind_and_id in every:
        found[run_id].add(kind_and_id)
    return dict(found)


def _tagged_through_the_tagging_api() -> list[tuple[str, tuple[str, str]]]:
    pages = (
        client("resourcegroupstaggingapi")
        .get_paginator("get_resources")
        .paginate(TagFilters=[{"Key": RUN_TAG}], ResourceTypeFilters=list(TAGGED_TYPES))
    )
    found = []
    for page in pages:
        for mapping in page["ResourceTagMappingList"]:
            kind_and_id = _kind_and_id(mapping["ResourceARN"])
            run_id = tag_dict(mapping.get("Tags")).get(RUN_TAG)
            if kind_and_id is not None and run_id:
                found.append((run_id, kind_and_id))
    return found


def _tagged_groups() -> list[tuple[str, tuple[str, str]]]:
    pages = (
        client("autoscaling")
        .get_paginator("describe_auto_scaling_groups")
        .paginate(Filters=[{"Name": "tag-key", "Values": [RUN_TAG]}])
    )
    return [
        (run_id, ("auto_scaling_group", group["AutoScalingGroupName"]))
        for page in pages
        for group in page["AutoScalingGroups"]
        if (run_id := tag_dict(group.get("Tags")).get(RUN_TAG))
    ]


def _tagged_instances() -> list[tuple[str, tuple[str, str]]]:
    pages = (
        client("ec2")
        .get_paginator("describe_instances")
        .paginate(
            Filters=[
                {"Name": "tag-key", "Values": [RUN_TAG]},
                {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES},
            ]
        )
    )
    return [
        (run_id, ("instance", instance["InstanceId"]))
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
        if (run_id := tag_dict(instance.get("Tags")).get(RUN_TAG))
    ]


def _tagged_ec2() -> list[tuple[str, tuple[str, str]]]:
    """Security groups and launch templates through EC2's own API too (the Tagging API's
    coverage of EC2 types has varied)."""
    ec2 = client("ec2")
    tagged = [{"Name": "tag-key", "Values": [RUN_TAG]}]
    groups = [
        (run_id, ("security_group", group["GroupId"]))
        for page in ec2.get_paginator("describe_security_groups").paginate(Filters=tagged)
        for group in page["SecurityGroups"]
        if (run_id := tag_dict(group.get("Tags")).get(RUN_TAG))
    ]
    templates = [
        (run_id, ("launch_template", template["LaunchTemplateId"]))
        for page in ec2.get_paginator("describe_launch_templates").paginate(Filters=tagged)
        for template in page["LaunchTemplates"]
        if (run_id := tag_dict(template.get("Tags")).get(RUN_TAG))
    ]
    return groups + templates


def _kind_and_id(arn: str) -> tuple[str, str] | None:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    service, resource = parts[2], parts[5]
    if service == "ec2":
        resource_type, _, resource_id = resource.partition("/")
        kinds = {"security-group": "security_group", "launch-template": "launch_template"}
        return (kinds[resource_type], resource_id) if resource_type in kinds else None
    if service == "elasticloadbalancing":
        kinds = {"loadbalancer": "load_balancer", "targetgroup": "target_group", "listener": "listener"}
        resource_type = resource.split("/", 1)[0]
        return (kinds[resource_type], arn) if resource_type in kinds else None
    return None


def sweep(table: RunTable, settings: JanitorSettings, now: float | None = None) -> SweepResult:
    """Remove what ended runs left behind, and release the locks they still hold."""
    now = time.time() if now is None else now
    result = SweepResult(removed=[], could_not_remove=[], skipped=[], locks_released=[])
    for run_id, resources in sorted(tagged_resources().items()):
        reason = _why_not_sweep(table.load_run(run_id), settings, now)
        if reason is not None:
            result.skipped.append(f"{run_id}: {reason}")
            continue
        _sweep_run(run_id, resources, table, now, result)
    _release_stale_locks(table, settings, now, result)
    logger.info("sweep", extra=result.model_dump())
    return result


def _why_not_sweep(record: RunRecord | None, settings: JanitorSettings, now: float) -> str | None:
    if record is None:
        return "no record in this stack's run table, so not this stack's run: left alone"
    if still_running(record, settings, now):
        return "its execution is still running"
    if record.started_at is not None and now - record.started_at < settings.grace_seconds:
        return f"started less than {settings.grace_seconds} s ago (the grace period)"
    return None


def _sweep_run(
    run_id: str, resources: set[tuple[str, str]], table: RunTable, now: float, result: SweepResult
) -> None:
    logger.append_keys(run_id=run_id)
    # The ledger first (its teardown releases the lock and marks the record), then
    # whatever carries the run's tag but is not, or no longer, in the ledger.
    still_listed: set[tuple[str, str]] = set()
    try:
        teardown = teardown_lab(run_id, table, now)
    except ClientError as exc:
        # One run's failure must not stop the sweep: what its ledger still lists is tried
        # below with its tagged resources (after a teardown pass, the ledger holds only
        # what that pass reported).
        logger.warning("ledger teardown failed", extra={"code": error_code(exc)})
        result.could_not_remove.append(f"{run_id}: the ledger's teardown failed ({error_code(exc)})")
        teardown = TeardownResult(done=False, removed=[], remaining=[], refused=[])
        record = table.load_run(run_id)
        still_listed = set(record.resources.items()) if record is not None else set()
    result.removed.extend(f"{run_id} {label}" for label in teardown.removed)
    result.could_not_remove.extend(f"{run_id} {label}: still releasing" for label in teardown.remaining)
    result.could_not_remove.extend(f"{run_id} {label}: not tagged for the run" for label in teardown.refused)
    handled = {label.split(":", 1)[1] for label in (*teardown.removed, *teardown.remaining)}
    for kind, physical_id in sorted(resources | still_listed, key=_in_sweep_order):
        if physical_id in handled:
            continue
        handled.add(physical_id)
        label = f"{run_id} {kind}:{physical_id}"
        try:
            outcome = delete_owned(kind, physical_id, run_id)
        except ClientError as exc:
            result.could_not_remove.append(f"{label}: {error_code(exc)}")
            logger.warning("could not remove", extra={"resource": label, "code": error_code(exc)})
            continue
        if outcome is Outcome.REMOVED:
            result.removed.append(label)
        elif outcome is Outcome.PENDING:
            result.could_not_remove.append(f"{label}: still releasing, the next sweep retries")
        else:
            result.could_not_remove.append(f"{label}: not tagged for the run")


def _in_sweep_order(item: tuple[str, str]) -> tuple[int, str]:
    kind, physical_id = item
    return (SWEEP_ORDER.index(kind) if kind in SWEEP_ORDER else len(SWEEP_ORDER), physical_id)


def _release_stale_locks(table: RunTable, settings: JanitorSettings, now: float, result: SweepResult) -> None:
    for lock in table.locks():
        record = table.load_run(lock.run_id)
        if record is not None:
            stale = not still_running(record, settings, now)
        else:
            stale = lock.lease_expires_at < now
        if stale and table.release_lock(lock.lab_name, lock.run_id):
            result.locks_released.append(f"{lock.lab_name} (held by {lock.run_id})")
