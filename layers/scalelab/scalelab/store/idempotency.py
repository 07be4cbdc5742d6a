"""Powertools Idempotency, stored in the run table (single-table: its own partition per function)."""

from __future__ import annotations

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from scalelab.core.aws import client
from scalelab.core.settings import TableSettings
from scalelab.store.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE


def run_table_persistence(settings: TableSettings) -> DynamoDBPersistenceLayer:
    """Idempotency records as items of the run table, expiring through its TTL attribute."""
    return DynamoDBPersistenceLayer(
        table_name=settings.table_name,
        key_attr=PARTITION_KEY,
        sort_key_attr=SORT_KEY,
        expiry_attr=TTL_ATTRIBUTE,
        boto3_client=client("dynamodb"),
    )
