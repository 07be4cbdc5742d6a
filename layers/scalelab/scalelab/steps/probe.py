"""Probe: does the load balancer really spread requests across the healthy instances?

A bounded number of plain HTTP GETs go, one after the other, to the app's
health path through the load balancer's DNS name. The built-in app answers
with the identity of the instance that served the request, so the probe can
count distinct instances. Each request is sent once (a failure is never
retried away) and is bounded by a hard deadline; the whole probe therefore
takes at most ``requests x timeout`` plus name resolution.

Probing is an observation: a failed probe is a result with ``passed=False``
and a reason a person can read, never an exception.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Network
from urllib.parse import SplitResult, urlsplit

from scalelab.contracts.probe import Latency, ProbeEvent, ProbeResult
from scalelab.core.clock import utc_iso
from scalelab.core.http import bounded_connection, request_target
from scalelab.core.observability import logger
from scalelab.core.settings import ProbeSettings

TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"

# The app's answer is a few hundred bytes; more than this is not read.
MAX_BODY_BYTES = 64 * 1024
# A new connection per request (as separate clients would), nothing cached.
REQUEST_HEADERS = {
    "User-Agent": "scalelab-probe/1",
    "Accept": "application/json",
    "Cache-Control": "no-cache",
    "Connection": "close",
}


@dataclass(frozen=True)
class Answer:
    """What one request saw: an HTTP status, or ``timeout`` / ``connection_error``."""

    outcome: str
    latency_ms: float | None = None
    instance_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome.isdigit() and 200 <= int(self.outcome) < 300


def _instance_id(body: bytes) -> str | None:
    """The ``instance_id`` the app put in its JSON answer, if there is one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    instance_id = document.get("instance_id")
    return instance_id if isinstance(instance_id, str) and instance_id else None


def get_once(url: SplitResult, timeout: float) -> Answer:
    """One GET, never retried, bounded by ``timeout`` from name resolution's end to the body's last byte."""
    started = time.monotonic()
    with bounded_connection(url, timeout) as (connection, expired):
        try:
            connection.request("GET", request_target(url), headers=REQUEST_HEADERS)
            response = connection.getresponse()
            body = response.read(MAX_BODY_BYTES)
            latency_ms = (time.monotonic() - started) * 1000
            if expired.is_set():
                return Answer(TIMEOUT)  # the read was cut short at the deadline
            ok = 200 <= response.status < 300
            return Answer(str(response.status), latency_ms, _instance_id(body) if ok else None)
        except TimeoutError:
            return Answer(TIMEOUT)
        except (OSError, http.client.HTTPException):
            return Answer(TIMEOUT if expired.is_set() else CONNECTION_ERROR)


def nearest_rank(values: list[float], percent: float) -> float:
    """The nearest-rank percentile: the smallest observed value with ``percent`` % of values at or below it.

    Chosen over ``statistics.quantiles`` because it is defined for a single
    value and always returns a latency that was actually observed.
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def _instances_phrase(instances: list[str]) -> str:
    noun = "instance" if len(instances) == 1 else "instances"
    return f"{len(instances)} {noun} ({', '.join(instances)})"


def judge(
    answers: list[Answer], instances: list[str], healthy_count: int, settings: ProbeSettings
) -> tuple[bool, str]:
    """Passed or not, and why, in sentences a person reads in the verdict.

    Pass needs a share of 2xx answers of at least ``success_ratio`` and
    answers from at least two distinct instances when two or more targets are
    healthy, from at least one otherwise (also when ``healthy_count`` is 0:
    a probe that never saw the app identify itself proves nothing).
    """
    ok = sum(answer.ok for answer in answers)
    ratio = ok / len(answers)
    ratio_met = ratio >= settings.success_ratio
    needed = 2 if healthy_count >= 2 else 1
    instances_met = len(instances) >= needed

    share = (
        f"{ok}/{len(answers)} answers were 2xx "
        f"({_percent(ratio)} {'>=' if ratio_met else '<'} {_percent(settings.success_ratio)})"
    )
    failures = Counter(answer.outcome for answer in answers if not answer.ok)
    others = ", ".join(f"{count} x {outcome}" for outcome, count in sorted(failures.items()))
    if ratio_met and instances_met:
        reason = f"{share} from {_instances_phrase(instances)}"
        return True, f"{reason}; the others: {others}" if others else reason

    problems = []
    if not ratio_met:
        problems.append(f"too few 2xx answers: {share}" + (f"; the others: {others}" if others else ""))
    if not instances_met:
        targets = f"{healthy_count} healthy target{'' if healthy_count == 1 else 's'}"
        if not instances:
            problems.append(
                "no 2xx answer named the instance that served it (JSON with an instance_id), "
                f"so the probe cannot tell instances apart ({targets})"
            )
        else:
            # With every answer fine, one instance answering can only mean no spread.
            cause = "the load balancer did not spread the requests: " if ratio_met else ""
            problems.append(
                f"{cause}only {_instances_phrase(instances)} answered 2xx, "
                f"while {targets} need at least {needed}"
            )
    if ratio_met:
        problems.append(share)
    if instances_met:
        problems.append(f"2xx answers came from {_instances_phrase(instances)}")
    if failures[TIMEOUT] and settings.alb_ingress_cidr.prefixlen > 0:
        problems.append(_narrowed_ingress(settings.alb_ingress_cidr))
    return False, "; ".join(problems)


def _narrowed_ingress(cidr: IPv4Network) -> str:
    """Why requests that time out may never have reached the load balancer: its security group
    admits only AlbIngressCidr, and the probe's function runs outside any VPC, so its requests
    come from Lambda's public addresses, which AWS does not fix and a narrow range leaves out."""
    return (
        f"AlbIngressCidr is {cidr}, narrower than 0.0.0.0/0: the load balancer's security group "
        "drops every request from outside it, and the probe runs in Lambda, whose public addresses "
        "are outside it; deploy with AlbIngressCidr=0.0.0.0/0 (the default) for the probe to reach "
        "the load balancer"
    )


def probe_app(event: ProbeEvent, settings: ProbeSettings) -> ProbeResult:
    """Send ``settings.requests`` GETs to ``event.url`` and judge the spread.

    Never raises for what the load balancer does or does not answer.
    """
    logger.append_keys(run_id=event.run_id)
    probed_at = utc_iso()
    url = urlsplit(event.url)
    answers = [get_once(url, settings.timeout_seconds) for _ in range(settings.requests)]

    counts = Counter(answer.outcome for answer in answers)
    status_counts = {TIMEOUT: 0, CONNECTION_ERROR: 0, **dict(sorted(counts.items()))}
    instances = sorted({answer.instance_id for answer in answers if answer.instance_id})
    latencies = [answer.latency_ms for answer in answers if answer.latency_ms is not None]
    passed, reason = judge(answers, instances, event.healthy_count, settings)
    result = ProbeResult(
        passed=passed,
        reason=reason,
        requests=len(answers),
        status_counts=status_counts,
        instances=instances,
        latency_ms=Latency(
            p50=round(nearest_rank(latencies, 50), 2),
            p95=round(nearest_rank(latencies, 95), 2),
        ),
        probed_at=probed_at,
    )
    log = logger.info if passed else logger.warning
    log("probe", extra={"url": event.url, **result.model_dump(mode="json")})
    return result
