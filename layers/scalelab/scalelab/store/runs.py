"""Run records with their resource ledgers, and the labs' locks."""

from __future__ import annotations

import json
import time
from typing import Any

from scalelab.contracts.resources import Kind
from scalelab.core.errors import LabBusy
from scalelab.core.settings import TableSettings
from scalelab.store.items import LabLock, RunRecord
from scalelab.store.table import LOCK_SK, Table, lock_key, run_key

# A reason is a person's sentence; DynamoDB items stay far below their 400 KB limit.
REASON_MAX = 4000
STATUS = {"#status": "status"}


class RunTable:
    """Run records, ledgers and locks; every write says what it expects to find."""

    def __init__(self, settings: TableSettings) -> None:
        self.table = Table(settings)

    # ---- run records -----------------------------------------------------------

    def start_run(
        self, run_id: str, lab_name: str, config: dict[str, Any], now: float, execution_name: str
    ) -> None:
        """Create (or, for a retried Prepare, refresh) the record of a run that passed validation."""
        self.table.update(
            run_key(run_id),
            "SET run_id = :run, lab_name = :lab, #status = :status, config_json = :config, "
            "execution_name = :execution, "
            "started_at = if_not_exists(started_at, :now), updated_at = :now, "
            "resources = if_not_exists(resources, :empty), "
            "refused = if_not_exists(refused, :empty), expires_at = :ttl",
            names=STATUS,
            values={
                ":run": run_id,
                ":lab": lab_name,
                ":status": "prepared",
                ":config": json.dumps(config, sort_keys=True),
                ":execution": execution_name,
                ":now": int(now),
                ":empty": {},
                ":ttl": self.table.expires_at(now),
            },
        )

    def reject_run(
        self,
        run_id: str,
        reason: str,
        now: float,
        lab_name: str | None = None,
        execution_name: str | None = None,
    ) -> None:
        """Keep a record of a run that was refused before it created anything."""
        values: dict[str, Any] = {
            ":run": run_id,
            ":status": "rejected",
            ":reason": reason[:REASON_MAX],
            ":now": int(now),
            ":empty": {},
            ":ttl": self.table.expires_at(now),
        }
        expression = (
            "SET run_id = :run, #status = :status, reason = :reason, "
            "started_at = if_not_exists(started_at, :now), updated_at = :now, "
            "resources = if_not_exists(resources, :empty), "
            "refused = if_not_exists(refused, :empty), expires_at = :ttl"
        )
        if lab_name is not None:
            expression += ", lab_name = :lab"
            values[":lab"] = lab_name
        if execution_name is not None:
            expression += ", execution_name = :execution"
            values[":execution"] = execution_name
        self.table.update(run_key(run_id), expression, names=STATUS, values=values)

    def load_run(self, run_id: str) -> RunRecord | None:
        return self.table.get(run_key(run_id), RunRecord)

    def record_execution_end(
        self, run_id: str, execution_name: str, execution_status: str, now: float
    ) -> bool:
        """Note how the run's execution ended when it ended abnormally (ABORTED, TIMED_OUT,
        FAILED). A run without a verdict yet takes that as its status, with a reason; a
        verdict, once recorded, stays. A run Prepare never recorded (its Lambda crashed
        first) gets a record now, so no execution goes unaccounted for. True when the run
        had a record already."""
        ended = execution_status.lower()
        noted = self.table.update(
            run_key(run_id),
            "SET run_id = :run, execution_status = :execution, ended_at = if_not_exists(ended_at, :now), "
            "execution_name = if_not_exists(execution_name, :name), "
            "updated_at = :now, started_at = if_not_exists(started_at, :now), "
            "#status = if_not_exists(#status, :ended), reason = if_not_exists(reason, :unrecorded), "
            "resources = if_not_exists(resources, :empty), refused = if_not_exists(refused, :empty), "
            "expires_at = if_not_exists(expires_at, :ttl)",
            names=STATUS,
            values={
                ":run": run_id,
                ":execution": execution_status,
                ":name": execution_name,
                ":now": int(now),
                ":ended": ended,
                ":unrecorded": f"the execution ended {execution_status} before Prepare recorded the run; "
                "nothing was created",
                ":empty": {},
                ":ttl": self.table.expires_at(now),
            },
            return_old=True,
        )
        self.table.update(
            run_key(run_id),
            "SET #status = :ended, reason = :reason",
            condition="#status = :prepared",
            names=STATUS,
            values={
                ":ended": ended,
                ":prepared": "prepared",
                ":reason": f"the execution ended {execution_status} before a verdict; "
                "the janitor tore the lab down",
            },
        )
        return bool(noted.old)

    def mark_torn_down(self, run_id: str, now: float) -> None:
        """Note that nothing of the run is left; its status (the verdict) stays as it is."""
        self.table.update(
            run_key(run_id),
            "SET torn_down_at = if_not_exists(torn_down_at, :now), updated_at = :now",
            condition="attribute_exists(pk)",
            values={":now": int(now)},
        )

    def record_verdict(self, run_id: str, passed: bool, reason: str, report_uri: str, now: float) -> None:
        self.table.update(
            run_key(run_id),
            "SET #status = :status, verdict_passed = :passed, reason = :reason, "
            "report_uri = :report, judged_at = :now, updated_at = :now",
            condition="attribute_exists(pk)",
            names=STATUS,
            values={
                ":status": "passed" if passed else "failed",
                ":passed": passed,
                ":reason": reason[:REASON_MAX],
                ":report": report_uri,
                ":now": int(now),
            },
        )

    # ---- the resource ledger ---------------------------------------------------

    def record_resource(self, run_id: str, kind: Kind, physical_id: str) -> None:
        """Write a created resource into the run's ledger (idempotent per kind).

        A resource must belong to a prepared run, or teardown could never find it:
        the write fails loudly when the run has no record.
        """
        written = self.table.update(
            run_key(run_id),
            "SET resources.#kind = :id",
            condition="attribute_exists(resources)",
            names={"#kind": str(kind)},
            values={":id": physical_id},
        )
        if not written.done:
            raise RuntimeError(f"run {run_id} has no record, so its {kind} {physical_id} cannot be recorded")

    def forget_resource(self, run_id: str, kind: Kind, physical_id: str, now: float) -> None:
        """Move a deleted resource's entry from the ledger to ``removed``, with when it went.

        Two writes: one expression may not create the ``removed`` map and set a key in it
        (overlapping paths), and records written before the map existed lack it.
        """
        self.table.update(
            run_key(run_id), "SET removed = if_not_exists(removed, :empty)", values={":empty": {}}
        )
        self.table.update(
            run_key(run_id),
            "SET removed.#kind = :entry REMOVE resources.#kind",
            names={"#kind": str(kind)},
            values={":entry": {"id": physical_id, "removed_at": int(now)}},
        )

    def refuse_resource(self, run_id: str, kind: Kind, physical_id: str) -> None:
        """Move a ledger entry whose resource is not tagged for the run out of teardown's way."""
        self.table.update(
            run_key(run_id),
            "SET refused.#kind = :id REMOVE resources.#kind",
            names={"#kind": str(kind)},
            values={":id": physical_id},
        )

    # ---- the lab lock ----------------------------------------------------------

    def acquire_lock(self, lab_name: str, run_id: str, lease_seconds: int, now: float) -> None:
        """Take the lab's lease, or raise LabBusy naming the run that holds it.

        The same run may take it again (a retried Prepare); an expired lease
        may be taken over, so a crashed run cannot block the lab forever.
        """
        lease = LabLock(
            pk=lock_key(lab_name)["pk"],
            run_id=run_id,
            acquired_at=int(now),
            lease_expires_at=int(now) + lease_seconds,
        )
        taken = self.table.put(
            lease,
            condition="attribute_not_exists(pk) OR run_id = :run OR lease_expires_at < :now",
            values={":run": run_id, ":now": int(now)},
        )
        if taken.done:
            return
        holder = LabLock.model_validate({"pk": lease.pk, **taken.old})
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.lease_expires_at))
        raise LabBusy(
            f"lab {lab_name!r} is in use by run {holder.run_id or 'an unknown run'!r} (lease until {until}); "
            "wait for that run to finish, or stop it and let teardown release the lab"
        )

    def locks(self) -> list[LabLock]:
        """Every lab's lock."""
        return self.table.scan_sort_key(LOCK_SK, LabLock)

    def lock_holder(self, lab_name: str) -> str | None:
        lock = self.table.get(lock_key(lab_name), LabLock)
        return lock.run_id or None if lock is not None else None

    def release_lock(self, lab_name: str, run_id: str) -> bool:
        """Release the lab's lock if this run holds it; True when it was released."""
        return self.table.delete(lock_key(lab_name), condition="run_id = :run", values={":run": run_id}).done
