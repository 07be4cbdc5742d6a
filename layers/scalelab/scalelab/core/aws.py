"""The one place that builds boto3 clients, and that names AWS's transient failures.

Region and endpoint come from the environment the way boto3 reads them
(``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``), so the same
code talks to AWS in Lambda and to the emulator offline. Retries use the
standard mode: backoff with jitter on throttling and transient errors.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from scalelab.core.errors import ScalelabError

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})

# The codes botocore's standard retry mode treats as throttling or transient
# (botocore/retries/standard.py), plus the service-internal errors some APIs name.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "Unavailable",
    }
)


class AwsTransientError(ScalelabError):
    """AWS still answered with throttling or a server error after the client's own retries.

    The state machine's Retry matches this name, so such a step is retried
    with backoff instead of failing the run.
    """


# Clients come from one session, so botocore parses its endpoint and service
# files once per process instead of once per client; creating clients from a
# session is not thread-safe, hence the lock (clients themselves are).
_session_lock = threading.Lock()


@cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@cache
def client(service: str) -> Any:
    with _session_lock:
        return _session().client(service, config=_CONFIG)  # type: ignore[call-overload]


@cache
def url_signer(service: str) -> Any:
    """A client for pre-signing URLs with SigV4, whose lifetime is bounded (seven days at most);
    botocore would otherwise presign S3 URLs with the older signature in some regions."""
    with _session_lock:
        return _session().client(  # type: ignore[call-overload]
            service, config=_CONFIG.merge(Config(signature_version="s3v4" if service == "s3" else "v4"))
        )


# Reads that only explain a failure (Judge's diagnosis) fail fast rather than retry for long: a late
# diagnosis is worth less than one that says a read failed.
_QUICK_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 2})


@cache
def quick_client(service: str) -> Any:
    with _session_lock:
        return _session().client(service, config=_QUICK_CONFIG)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget the session and its clients (tests change region and endpoint between cases)."""
    client.cache_clear()
    url_signer.cache_clear()
    quick_client.cache_clear()
    _session.cache_clear()


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return error_code(exc) in TRANSIENT_ERROR_CODES or status >= 500


HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def name_transient_errors(handler: HandlerT) -> HandlerT:
    """Let a handler's transient AWS failures reach Step Functions as ``AwsTransientError``."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ClientError as exc:
            if is_transient(exc):
                raise AwsTransientError(f"AWS is failing for now: {exc}") from exc
            raise
        except BotocoreConnectionError as exc:
            raise AwsTransientError(f"AWS could not be reached: {exc}") from exc

    return wrapper  # type: ignore[return-value]
