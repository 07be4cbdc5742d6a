"""The run table: one record per run (with its resource ledger) and one lock per lab.

Items (partition key ``pk``, sort key ``sk``):

- ``RUN#<run id>`` / ``RUN``: the run record. ``resources`` maps a resource
  kind to the id or ARN of what the run created; an entry is written as soon
  as the resource exists and removed once teardown has deleted it.
- ``LAB#<lab name>`` / ``LOCK``: the lab's lock, a lease that names the run
  holding it and when the lease runs out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from botocore.exceptions import ClientError

from scalelab.aws import client, error_code
from scalelab.errors import LabBusy
from scalelab.settings import TableSettings

RUN_SK = "RUN"
LOCK_SK = "LOCK"


def _run_key(run_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": RUN_SK}}


def _lock_key(lab_name: str) -> dict[str, Any]:
    return {"pk": {"S": f"LAB#{lab_name}"}, "sk": {"S": LOCK_SK}}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    lab_name: str | None
    resources: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    torn_down_at: int | None = None
    started_at: int | None = None
    # The Step Functions execution the run belongs to, so the janitor can ask whether it still runs.
    execution_name: str | None = None


@dataclass(frozen=True)
class LabLock:
    lab_name: str
    run_id: str
    lease_expires_at: int


def _string_map(item: dict[str, Any], name: str) -> dict[str, str]:
    return {key: value["S"] for key, value in item.get(name, {}).get("M", {}).items()}


class RunTable:
    """Typed access to the run table; every write says what it expects to find."""

    def __init__(self, settings: TableSettings) -> None:
        self._name = settings.table_name
        self._ttl_seconds = settings.run_record_ttl_days * 86_400
        self._ddb = client("dynamodb")

    # ---- run records -----------------------------------------------------------

    def start_run(
        self, run_id: str, lab_name: str, config: dict[str, Any], now: float, execution_name: str
    ) -> None:
        """Create (or, for a retried Prepare, refresh) the record of a run that passed validation."""
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression=(
                "SET run_id = :run, lab_name = :lab, #status = :status, config_json = :config, "
                "execution_name = :execution, "
                "started_at = if_not_exists(started_at, :now), updated_at = :now, "
                "resources = if_not_exists(resources, :empty), "
                "refused = if_not_exists(refused, :empty), expires_at = :ttl"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":run": {"S": run_id},
                ":lab": {"S": lab_name},
                ":status": {"S": "prepared"},
                ":config": {"S": json.dumps(config, sort_keys=True)},
                ":execution": {"S": execution_name},
                ":now": {"N": str(int(now))},
                ":empty": {"M": {}},
                ":ttl": {"N": str(int(now) + self._ttl_seconds)},
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
            ":run": {"S": run_id},
            ":status": {"S": "rejected"},
            ":reason": {"S": reason[:4000]},
            ":now": {"N": str(int(now))},
            ":empty": {"M": {}},
            ":ttl": {"N": str(int(now) + self._ttl_seconds)},
        }
        expression = (
            "SET run_id = :run, #status = :status, reason = :reason, "
            "started_at = if_not_exists(started_at, :now), updated_at = :now, "
            "resources = if_not_exists(resources, :empty), "
            "refused = if_not_exists(refused, :empty), expires_at = :ttl"
        )
        if lab_name is not None:
            expression += ", lab_name = :lab"
            values[":lab"] = {"S": lab_name}
        if execution_name is not None:
            expression += ", execution_name = :execution"
            values[":execution"] = {"S": execution_name}
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression=expression,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )

    def load_run(self, run_id: str) -> RunRecord | None:
        item = self._ddb.get_item(TableName=self._name, Key=_run_key(run_id), ConsistentRead=True)
        found = item.get("Item")
        if found is None:
            return None
        return RunRecord(
            run_id=run_id,
            status=found.get("status", {}).get("S", "unknown"),
            lab_name=found.get("lab_name", {}).get("S"),
            resources=_string_map(found, "resources"),
            refused=_string_map(found, "refused"),
            reason=found.get("reason", {}).get("S"),
            torn_down_at=int(found["torn_down_at"]["N"]) if "torn_down_at" in found else None,
            started_at=int(found["started_at"]["N"]) if "started_at" in found else None,
            execution_name=found.get("execution_name", {}).get("S"),
        )

    def record_execution_end(
        self, run_id: str, execution_name: str, execution_status: str, now: float
    ) -> bool:
        """Note how the run's execution ended when it ended abnormally (ABORTED, TIMED_OUT,
        FAILED). A run without a verdict yet takes that as its status, with a reason; a
        verdict, once recorded, stays. A run Prepare never recorded (its Lambda crashed
        first) gets a record now, so no execution goes unaccounted for. True when the run
        had a record already."""
        ended = execution_status.lower()
        old = self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression=(
                "SET run_id = :run, execution_status = :execution, ended_at = if_not_exists(ended_at, :now), "
                "execution_name = if_not_exists(execution_name, :name), "
                "updated_at = :now, started_at = if_not_exists(started_at, :now), "
                "#status = if_not_exists(#status, :ended), reason = if_not_exists(reason, :unrecorded), "
                "resources = if_not_exists(resources, :empty), refused = if_not_exists(refused, :empty), "
                "expires_at = if_not_exists(expires_at, :ttl)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":run": {"S": run_id},
                ":execution": {"S": execution_status},
                ":name": {"S": execution_name},
                ":now": {"N": str(int(now))},
                ":ended": {"S": ended},
                ":unrecorded": {
                    "S": f"the execution ended {execution_status} before Prepare recorded the run; "
                    "nothing was created"
                },
                ":empty": {"M": {}},
                ":ttl": {"N": str(int(now) + self._ttl_seconds)},
            },
            ReturnValues="ALL_OLD",
        )
        existed = bool(old.get("Attributes"))
        try:
            self._ddb.update_item(
                TableName=self._name,
                Key=_run_key(run_id),
                UpdateExpression="SET #status = :ended, reason = :reason",
                ConditionExpression="#status = :prepared",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":ended": {"S": ended},
                    ":prepared": {"S": "prepared"},
                    ":reason": {
                        "S": f"the execution ended {execution_status} before a verdict; "
                        "the janitor tore the lab down"
                    },
                },
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        return existed

    def mark_torn_down(self, run_id: str, now: float) -> None:
        """Note that nothing of the run is left; its status (the verdict) stays as it is."""
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression="SET torn_down_at = if_not_exists(torn_down_at, :now), updated_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": {"N": str(int(now))}},
        )

    def record_verdict(self, run_id: str, passed: bool, reason: str, report_uri: str, now: float) -> None:
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression=(
                "SET #status = :status, verdict_passed = :passed, reason = :reason, "
                "report_uri = :report, judged_at = :now, updated_at = :now"
            ),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":status": {"S": "passed" if passed else "failed"},
                ":passed": {"BOOL": passed},
                ":reason": {"S": reason[:4000]},
                ":report": {"S": report_uri},
                ":now": {"N": str(int(now))},
            },
        )

    # ---- the resource ledger ---------------------------------------------------

    def record_resource(self, run_id: str, kind: str, physical_id: str) -> None:
        """Write a created resource into the run's ledger (idempotent per kind)."""
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression="SET resources.#kind = :id",
            # A resource must belong to a prepared run, or teardown could never find it.
            ConditionExpression="attribute_exists(resources)",
            ExpressionAttributeNames={"#kind": kind},
            ExpressionAttributeValues={":id": {"S": physical_id}},
        )

    def forget_resource(self, run_id: str, kind: str) -> None:
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression="REMOVE resources.#kind",
            ExpressionAttributeNames={"#kind": kind},
        )

    def refuse_resource(self, run_id: str, kind: str, physical_id: str) -> None:
        """Move a ledger entry whose resource is not tagged for the run out of teardown's way."""
        self._ddb.update_item(
            TableName=self._name,
            Key=_run_key(run_id),
            UpdateExpression="SET refused.#kind = :id REMOVE resources.#kind",
            ExpressionAttributeNames={"#kind": kind},
            ExpressionAttributeValues={":id": {"S": physical_id}},
        )

    # ---- the lab lock ----------------------------------------------------------

    def acquire_lock(self, lab_name: str, run_id: str, lease_seconds: int, now: float) -> None:
        """Take the lab's lease, or raise LabBusy naming the run that holds it.

        The same run may take it again (a retried Prepare); an expired lease
        may be taken over, so a crashed run cannot block the lab forever.
        """
        try:
            self._ddb.put_item(
                TableName=self._name,
                Item={
                    **_lock_key(lab_name),
                    "run_id": {"S": run_id},
                    "acquired_at": {"N": str(int(now))},
                    "lease_expires_at": {"N": str(int(now) + lease_seconds)},
                },
                ConditionExpression=("attribute_not_exists(pk) OR run_id = :run OR lease_expires_at < :now"),
                ExpressionAttributeValues={":run": {"S": run_id}, ":now": {"N": str(int(now))}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            holder = cast(dict[str, Any], exc.response.get("Item", {}))
            active = holder.get("run_id", {}).get("S", "an unknown run")
            expires = int(holder.get("lease_expires_at", {}).get("N", "0"))
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            raise LabBusy(
                f"lab {lab_name!r} is in use by run {active!r} (lease until {until}); "
                "wait for that run to finish, or stop it and let teardown release the lab"
            ) from None

    def locks(self) -> list[LabLock]:
        """Every lab's lock (a handful of items: a scan with a filter is the right tool)."""
        pages = self._ddb.get_paginator("scan").paginate(
            TableName=self._name,
            FilterExpression="sk = :lock",
            ExpressionAttributeValues={":lock": {"S": LOCK_SK}},
            ConsistentRead=True,
        )
        return [
            LabLock(
                lab_name=item["pk"]["S"].removeprefix("LAB#"),
                run_id=item.get("run_id", {}).get("S", ""),
                lease_expires_at=int(item.get("lease_expires_at", {}).get("N", "0")),
            )
            for page in pages
            for item in page["Items"]
        ]

    def lock_holder(self, lab_name: str) -> str | None:
        item = self._ddb.get_item(TableName=self._name, Key=_lock_key(lab_name), ConsistentRead=True)
        holder: str | None = item.get("Item", {}).get("run_id", {}).get("S")
        return holder

    def release_lock(self, lab_name: str, run_id: str) -> bool:
        """Release the lab's lock if this run holds it; True when it was released."""
        try:
            self._ddb.delete_item(
                TableName=self._name,
                Key=_lock_key(lab_name),
                ConditionExpression="run_id = :run",
                ExpressionAttributeValues={":run": {"S": run_id}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True
