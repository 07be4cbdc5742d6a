"""Logger, Tracer and Metrics singletons shared by every function."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
# What the functions call out through: AWS APIs (botocore) and the probe's HTTP requests
# (http.client). Tracer patches every library X-Ray supports by default, importing each one it
# finds (requests, sqlite3, ...) at every cold start although no function uses them.
tracer = Tracer(patch_modules=("botocore", "httplib"))
# Namespace and service come from POWERTOOLS_METRICS_NAMESPACE and POWERTOOLS_SERVICE_NAME.
metrics = Metrics()
