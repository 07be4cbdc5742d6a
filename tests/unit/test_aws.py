"""Transient AWS failures reach the state machine under the name its Retry matches."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from scalelab.core.aws import AwsTransientError, name_transient_errors


def failing(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    "error",
    [
        failing("ThrottlingException"),
        failing("RequestLimitExceeded"),
        failing("Whatever", 503),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
)
def test_throttling_server_and_connection_errors_become_aws_transient_error(error: Exception) -> None:
    @name_transient_errors
    def handler() -> None:
        raise error

    with pytest.raises(AwsTransientError):
        handler()


def test_other_aws_errors_keep_their_own_name() -> None:
    @name_transient_errors
    def handler() -> None:
        raise failing("AccessDenied", 403)

    with pytest.raises(ClientError, match="AccessDenied"):
        handler()
