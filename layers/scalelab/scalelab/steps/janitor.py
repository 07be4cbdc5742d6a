"""The janitor: cleanup that does not depend on the run's own execution.

Two jobs. ``close_run`` is the first step of the cleanup state machine, which
an EventBridge rule starts when a lab execution ends ABORTED, TIMED_OUT or
FAILED: it notes on the run record how the execution ended (the state machine
then loops the teardown function). ``sweep`` runs on a schedule: it finds every
resource tagged ``scalelab:run`` (through the Resource Groups Tagging API, and
the EC2 and Auto Scaling APIs for instances and groups) and the load state
machine's running executions (which take no tag), so what a ledger missed is
found too, and removes those of runs that have ended and are older than the
grace period. Only resources whose tag names a run recorded in this
stack's table are touched, and each deletion checks the tag again.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from scalelab.contracts.janitor import CloseResult, RunResource, SweepProblem, SweepResult
from scalelab.contracts.resources import Kind, ResourceRef
from scalelab.core.aws import client, error_code
from scalelab.core.naming import run_id_from_execution, run_of_load_execution
from scalelab.core.observability import logger
from scalelab.core.settings import JanitorSettings
from scalelab.resources.discovery import tagged_by_run
from scalelab.resources.kinds import Deletion, delete_owned, in_teardown_order
from scalelab.steps.teardown import teardown_lab
from scalelab.store.items import RunRecord
from scalelab.store.runs import RunTable


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


def running_loads(load_state_machine_arn: str) -> list[tuple[str, ResourceRef]]:
    """The load state machine's RUNNING executions, by the run their name was derived from: they
    carry no tag, so the Tagging API never lists them."""
    pages = (
        client("stepfunctions")
        .get_paginator("list_executions")
        .paginate(stateMachineArn=load_state_machine_arn, statusFilter="RUNNING")
    )
    loads = []
    for page in pages:
        for execution in page["executions"]:
            run_id = run_of_load_execution(execution["name"])
            if run_id is not None:
                loads.append((run_id, ResourceRef(kind=Kind.LOAD_EXECUTION, id=execution["executionArn"])))
    return loads


def sweep(table: RunTable, settings: JanitorSettings, now: float | None = None) -> SweepResult:
    """Remove what ended runs left behind, and release the locks they still hold."""
    now = time.time() if now is None else now
    result = SweepResult(removed=[], could_not_remove=[], skipped=[], locks_released=[])
    found = tagged_by_run()
    for run_id, load in running_loads(settings.load_state_machine_arn):
        found.setdefault(run_id, set()).add(load)
    for run_id, resources in sorted(found.items()):
        reason = _why_not_sweep(table.load_run(run_id), settings, now)
        if reason is not None:
            result.skipped.append(f"{run_id}: {reason}")
            continue
        _sweep_run(run_id, resources, table, now, result)
    _release_stale_locks(table, settings, now, result)
    logger.info("sweep", extra=result.model_dump(mode="json"))
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
    run_id: str, resources: set[ResourceRef], table: RunTable, now: float, result: SweepResult
) -> None:
    logger.append_keys(run_id=run_id)
    # The ledger first (its teardown releases the lock and marks the record), then
    # whatever carries the run's tag but is not, or no longer, in the ledger.
    still_listed: set[ResourceRef] = set()
    handled: set[str] = set()
    try:
        teardown = teardown_lab(run_id, table, now)
    except ClientError as exc:
        # One run's failure must not stop the sweep: what its ledger still lists is tried
        # below with its tagged resources (after a teardown pass, the ledger holds only
        # what that pass reported).
        logger.warning("ledger teardown failed", extra={"code": error_code(exc)})
        result.could_not_remove.append(
            SweepProblem(
                run_id=run_id, resource=None, reason=f"the ledger's teardown failed ({error_code(exc)})"
            )
        )
        record = table.load_run(run_id)
        if record is not None:
            still_listed = {ResourceRef(kind=kind, id=ident) for kind, ident in record.resources.items()}
    else:
        result.removed.extend(RunResource(run_id=run_id, resource=ref) for ref in teardown.removed)
        result.could_not_remove.extend(
            SweepProblem(run_id=run_id, resource=ref, reason="still releasing") for ref in teardown.remaining
        )
        result.could_not_remove.extend(
            SweepProblem(run_id=run_id, resource=ref, reason="not tagged for the run")
            for ref in teardown.refused
        )
        handled = {ref.id for ref in (*teardown.removed, *teardown.remaining)}
    for ref in in_teardown_order(resources | still_listed):
        if ref.id in handled:
            continue
        handled.add(ref.id)
        try:
            outcome = delete_owned(ref, run_id)
        except ClientError as exc:
            result.could_not_remove.append(SweepProblem(run_id=run_id, resource=ref, reason=error_code(exc)))
            logger.warning("could not remove", extra={"resource": str(ref), "code": error_code(exc)})
            continue
        if outcome is Deletion.REMOVED:
            result.removed.append(RunResource(run_id=run_id, resource=ref))
        elif outcome is Deletion.PENDING:
            result.could_not_remove.append(
                SweepProblem(run_id=run_id, resource=ref, reason="still releasing, the next sweep retries")
            )
        else:
            result.could_not_remove.append(
                SweepProblem(run_id=run_id, resource=ref, reason="not tagged for the run")
            )


def _release_stale_locks(table: RunTable, settings: JanitorSettings, now: float, result: SweepResult) -> None:
    for lock in table.locks():
        record = table.load_run(lock.run_id)
        if record is not None:
            stale = not still_running(record, settings, now)
        else:
            stale = lock.lease_expires_at < now
        if stale and table.release_lock(lock.lab_name, lock.run_id):
            result.locks_released.append(f"{lock.lab_name} (held by {lock.run_id})")
