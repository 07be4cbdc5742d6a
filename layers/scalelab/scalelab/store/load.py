"""The load workers' measurements: one item per worker and round, in the run's partition."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from scalelab.contracts.load import Measurement
from scalelab.core.settings import TableSettings
from scalelab.store.items import Item
from scalelab.store.table import LOAD_SK_PREFIX, Table, key, run_partition, to_attributes


class StoredMeasurement(Measurement, Item):
    """A measurement with its key and expiry, as written."""

    pk: str
    sk: str
    expires_at: int


def measurement_sort_key(round_index: int, worker: int) -> str:
    # Zero-padded, so a query returns the rounds in order.
    return f"{LOAD_SK_PREFIX}{round_index:06d}#{worker:03d}"


class LoadTable:
    """Writes a worker's measurement (its only write: a retried worker overwrites its own item)."""

    def __init__(self, settings: TableSettings) -> None:
        self.table = Table(settings)

    def put_measurement(self, measurement: Measurement, now: float) -> None:
        values: dict[str, Any] = {
            **measurement.model_dump(mode="json"),
            **key(
                run_partition(measurement.run_id),
                measurement_sort_key(measurement.round, measurement.worker),
            ),
            # DynamoDB numbers: boto3 refuses a float, a Decimal keeps the milliseconds.
            "seconds": Decimal(str(round(measurement.seconds, 3))),
            "expires_at": self.table.expires_at(now),
        }
        self.table.ddb.put_item(TableName=self.table.name, Item=to_attributes(values))
