"""Probe: where to send requests, and what the probe saw."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from scalelab.contracts.base import InputModel, OutputModel, RunId


class ProbeEvent(InputModel):
    """What the state machine hands the probe: where to send requests, and how many targets are healthy."""

    run_id: RunId
    url: str = Field(min_length=8, max_length=2048)
    healthy_count: int = Field(ge=0)

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        if not re.fullmatch(r"[\x21-\x7e]+", value):
            raise ValueError("must be printable ASCII without spaces")
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if parts.scheme != "http":
            raise ValueError(
                "must start with http:// (the lab's load balancer listens on plain HTTP, port 80)"
            )
        if not parts.hostname:
            raise ValueError("names no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials")
        if parts.fragment:
            raise ValueError("must not have a #fragment")
        if parts.path and not parts.path.startswith("/"):
            raise ValueError("path must start with /")
        return value


class Latency(OutputModel):
    """Nearest-rank percentiles, in milliseconds, of the requests that got an HTTP answer."""

    p50: float
    p95: float


class ProbeResult(OutputModel):
    passed: bool
    reason: str
    requests: int
    # HTTP status codes as strings, plus "timeout" and "connection_error"
    # (those two always present, so a state can read them without a missing path).
    status_counts: dict[str, int]
    instances: list[str]
    latency_ms: Latency
    probed_at: str
