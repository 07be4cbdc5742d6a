"""The run table: its key schema, the conversion of items, and conditional writes, in one place.

One DynamoDB table holds everything of a run and of a lab (partition key
``pk``, sort key ``sk``; every item expires through ``expires_at``):

| pk                | sk                 | item                                              |
|-------------------|--------------------|---------------------------------------------------|
| ``RUN#<run id>``  | ``RUN``            | the run record, with its resource ledger          |
| ``RUN#<run id>``  | ``EVENT#<id>``     | one Auto Scaling event of the run's group         |
| ``RUN#<run id>``  | ``SCALEOUT_WAIT``  | the scale-out wait's task token and its claim     |
| ``RUN#<run id>``  | ``LOAD#<r>#<w>``   | what load worker w measured in round r            |
| ``LAB#<lab>``     | ``LOCK``           | the lab's lock, a lease naming the run holding it |
| Powertools' own   | its own            | idempotency records (``store.idempotency``)       |

Items are pydantic models (``store.items``); boto3's own TypeSerializer and
TypeDeserializer convert them to and from DynamoDB's attribute values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel

from scalelab.core.aws import client, error_code
from scalelab.core.settings import TableSettings

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"
RUN_SK = "RUN"
LOCK_SK = "LOCK"
WAITER_SK = "SCALEOUT_WAIT"
EVENT_SK_PREFIX = "EVENT#"
LOAD_SK_PREFIX = "LOAD#"

ItemT = TypeVar("ItemT", bound=BaseModel)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def run_partition(run_id: str) -> str:
    return f"RUN#{run_id}"


def lab_partition(lab_name: str) -> str:
    return f"LAB#{lab_name}"


def key(partition: str, sort: str) -> dict[str, str]:
    return {PARTITION_KEY: partition, SORT_KEY: sort}


def run_key(run_id: str) -> dict[str, str]:
    return key(run_partition(run_id), RUN_SK)


def lock_key(lab_name: str) -> dict[str, str]:
    return key(lab_partition(lab_name), LOCK_SK)


def waiter_key(run_id: str) -> dict[str, str]:
    return key(run_partition(run_id), WAITER_SK)


def event_key(run_id: str, event_id: str) -> dict[str, str]:
    return key(run_partition(run_id), f"{EVENT_SK_PREFIX}{event_id}")


def to_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values (str, int, bool, dict, list, None) as DynamoDB attribute values."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def from_attributes(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain values; whole numbers come back as int, not Decimal."""
    plain = {name: _deserializer.deserialize(value) for name, value in item.items()}
    return {name: _whole(value) for name, value in plain.items()}


def _whole(value: Any) -> Any:
    # TypeDeserializer returns every number as Decimal; the table stores only whole seconds.
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def as_item(model: BaseModel) -> dict[str, Any]:
    """A model as a DynamoDB item (fields left unset stay out of the item)."""
    return to_attributes(model.model_dump(mode="json", exclude_none=True))


@dataclass(frozen=True)
class Written:
    """Whether a conditional write happened, and the item as it was (when it was asked for)."""

    done: bool
    old: dict[str, Any] = field(default_factory=dict)


class Table:
    """The run table, for the modules that own its items; every write says what it expects to find."""

    def __init__(self, settings: TableSettings) -> None:
        self.name = settings.table_name
        self._ttl_seconds = settings.run_record_ttl_days * 86_400
        self.ddb = client("dynamodb")

    def expires_at(self, now: float) -> int:
        return int(now) + self._ttl_seconds

    def get(self, item_key: dict[str, str], model: type[ItemT]) -> ItemT | None:
        found = self.ddb.get_item(TableName=self.name, Key=to_attributes(item_key), ConsistentRead=True)
        item = found.get("Item")
        return None if item is None else model.model_validate(from_attributes(item))

    def query(self, partition: str, sort_prefix: str, model: type[ItemT]) -> list[ItemT]:
        pages = self.ddb.get_paginator("query").paginate(
            TableName=self.name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_attributes({":pk": partition, ":prefix": sort_prefix}),
            ConsistentRead=True,
        )
        return [model.model_validate(from_attributes(item)) for page in pages for item in page["Items"]]

    def scan_sort_key(self, sort: str, model: type[ItemT]) -> list[ItemT]:
        """Every item with this sort key (a handful of items: a scan with a filter is the right tool)."""
        pages = self.ddb.get_paginator("scan").paginate(
            TableName=self.name,
            FilterExpression="sk = :sk",
            ExpressionAttributeValues=to_attributes({":sk": sort}),
            ConsistentRead=True,
        )
        return [model.model_validate(from_attributes(item)) for page in pages for item in page["Items"]]

    def put(self, item: BaseModel, *, condition: str, values: dict[str, Any] | None = None) -> Written:
        """Put ``item`` if ``condition`` holds; ``old`` is the item that stopped it."""
        arguments: dict[str, Any] = {
            "TableName": self.name,
            "Item": as_item(item),
            "ConditionExpression": condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if values:
            arguments["ExpressionAttributeValues"] = to_attributes(values)
        return self._conditionally(self.ddb.put_item, arguments)

    def update(
        self,
        item_key: dict[str, str],
        expression: str,
        *,
        values: dict[str, Any] | None = None,
        names: dict[str, str] | None = None,
        condition: str | None = None,
        return_old: bool = False,
    ) -> Written:
        """Update one item; with a ``condition`` that fails, nothing is written and ``done`` is False."""
        arguments: dict[str, Any] = {
            "TableName": self.name,
            "Key": to_attributes(item_key),
            "UpdateExpression": expression,
        }
        if values:
            arguments["ExpressionAttributeValues"] = to_attributes(values)
        if names:
            arguments["ExpressionAttributeNames"] = names
        if condition:
            arguments["ConditionExpression"] = condition
        if return_old:
            arguments["ReturnValues"] = "ALL_OLD"
        return self._conditionally(self.ddb.update_item, arguments)

    def delete(self, item_key: dict[str, str], *, condition: str, values: dict[str, Any]) -> Written:
        return self._conditionally(
            self.ddb.delete_item,
            {
                "TableName": self.name,
                "Key": to_attributes(item_key),
                "ConditionExpression": condition,
                "ExpressionAttributeValues": to_attributes(values),
            },
        )

    @staticmethod
    def _conditionally(write: Any, arguments: dict[str, Any]) -> Written:
        """The one place a failed condition is told apart from every other error."""
        try:
            response = write(**arguments)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # ReturnValuesOnConditionCheckFailure puts the item that stopped the write here.
            stopped_by: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            return Written(done=False, old=from_attributes(stopped_by))
        return Written(done=True, old=from_attributes(response.get("Attributes") or {}))
