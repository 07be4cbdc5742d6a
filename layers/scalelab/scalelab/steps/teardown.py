"""Teardown: delete what the run's ledger lists, in dependency order, never sleeping.

Each call makes one pass. What AWS is still releasing (a group terminating its
instances, a load balancer's network interfaces holding a security group) is
reported as remaining, and the state machine waits and calls again.
"""

from __future__ import annotations

import time

from scalelab.contracts.resources import ResourceRef
from scalelab.contracts.teardown import TeardownResult
from scalelab.core.observability import logger
from scalelab.resources.kinds import Deletion, delete_owned, in_teardown_order
from scalelab.store.runs import RunTable


def teardown_lab(run_id: str, table: RunTable, now: float | None = None) -> TeardownResult:
    """One teardown pass for ``run_id``: harmless to repeat, harmless for a run that made nothing."""
    now = time.time() if now is None else now
    logger.append_keys(run_id=run_id)
    record = table.load_run(run_id)
    if record is None:
        logger.info("no record of this run: nothing to tear down")
        return TeardownResult(done=True, removed=[], remaining=[], refused=[])

    removed: list[ResourceRef] = []
    remaining: list[ResourceRef] = []
    refused = [ResourceRef(kind=kind, id=physical_id) for kind, physical_id in record.refused.items()]
    listed = [ResourceRef(kind=kind, id=physical_id) for kind, physical_id in record.resources.items()]
    for ref in in_teardown_order(listed):
        outcome = delete_owned(ref, run_id)
        if outcome is Deletion.REMOVED:
            table.forget_resource(run_id, ref.kind, ref.id, now)
            removed.append(ref)
        elif outcome is Deletion.REFUSED:
            logger.warning("refused: not tagged for this run", extra={"kind": ref.kind, "id": ref.id})
            table.refuse_resource(run_id, ref.kind, ref.id)
            refused.append(ref)
        else:
            logger.info("still releasing", extra={"kind": ref.kind, "id": ref.id})
            remaining.append(ref)

    done = not remaining
    if done:
        if record.lab_name is not None:
            table.release_lock(record.lab_name, run_id)
        table.mark_torn_down(run_id, now)
    result = TeardownResult(done=done, removed=removed, remaining=remaining, refused=refused)
    logger.info("teardown pass", extra=result.model_dump(mode="json"))
    return result
