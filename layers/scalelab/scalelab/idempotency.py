"""Powertools Idempotency, stored in the run table (single-table: its own partition per function)."""

from __future__ import annotations

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from scalelab.aws import client
from scalelab.settings import TableSettings


def run_table_persistence(settings: TableSettings) -> DynamoDBPersistenceLayer:
    """Idempotency records as items of the run table, expiring through its TTL attribute."""
    return DynamoDBPersistenceLayer(
        table_name=settings.table_name,
        key_attr="pk",
        sort_key_attr="sk",
        expiry_attr="expires_at",
        boto3_client=client("dynamodb"),
    )
