"""The load of a network or request signal: planned by StartStress, sent by the load state machine's workers.

cpu keeps the SSM burn (``steps.stress``). For request_count the workers send ``GET <health
path>`` through the load balancer; for network_in they POST bodies to the app's
``/load/upload``; for network_out they GET ``/load/download?bytes=N``. Each body and each
download is at most 1 MiB, the app's own cap.

The rate aims at twice the target per instance at the group's desired capacity, so target
tracking must add an instance; the template's caps (requests and bytes per second, workers)
bound what a run can cost, and when they keep the load at or under the target itself the plan
says so: no scale-out is then expected, and the diagnosis can name the cap.

A worker sends at its share of the rate for one bounded round (``LoadRoundSeconds``, never past
the load's end), paced rather than bursting, each request bounded by a timeout; it measures what
it sent and got back, records that on the run and returns it. The load state machine starts the
next round until the end time or a StopExecution: a Lambda runs for at most its round, so a
stopped load stops within a round.
"""

from __future__ import annotations

import http.client
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import SplitResult, urlsplit

from scalelab.contracts.load import (
    MAX_TRANSFER_BYTES,
    MAX_WORKERS,
    LoadMethod,
    LoadPlan,
    Measurement,
    WorkerEvent,
)
from scalelab.contracts.scaling import Scaling
from scalelab.core.clock import as_utc, utc_iso
from scalelab.core.errors import InvalidInput
from scalelab.core.http import bounded_connection, request_target
from scalelab.core.observability import logger
from scalelab.core.settings import LoadSettings
from scalelab.store.load import LoadTable

UPLOAD_PATH = "/load/upload"
DOWNLOAD_PATH = "/load/download"
# Twice the target per instance: target tracking then wants twice the instances, at least one more.
AIM_FACTOR = 2.0
# What one worker (one Lambda, one request at a time) is given at most before the plan adds
# another: a request through a load balancer takes tens of milliseconds.
WORKER_REQUESTS_PER_SECOND = 20.0
WORKER_BYTES_PER_SECOND = 5_000_000.0
# A network load is spread over about this many requests a second (fewer, larger ones once a
# body would pass 1 MiB), so the request count stays small beside the bytes.
NETWORK_REQUESTS_PER_SECOND = 10.0
MIN_TRANSFER_BYTES = 1024
# Each request is bounded: a slow answer costs at most this, and counts as failed.
REQUEST_TIMEOUT_SECONDS = 5.0
READ_CHUNK_BYTES = 65_536
REQUEST_HEADERS = {"User-Agent": "scalelab-load/1", "Cache-Control": "no-cache", "Connection": "close"}


def _problems(
    scaling: Scaling, desired_capacity: int, base_url: str, health_path: str, duration_seconds: int
) -> list[str]:
    problems = []
    if scaling.metric == "cpu":
        problems.append("the cpu signal has no HTTP load (StartStress sends the SSM CPU burn)")
    if isinstance(desired_capacity, bool) or not isinstance(desired_capacity, int) or desired_capacity < 1:
        problems.append(f"the group's desired capacity must be a whole number >= 1, not {desired_capacity!r}")
    if isinstance(duration_seconds, bool) or not isinstance(duration_seconds, int) or duration_seconds < 1:
        problems.append(f"the load's duration must be whole seconds >= 1, not {duration_seconds!r}")
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path not in {"", "/"}:
        problems.append(f"the load balancer's URL must be http://<dns name>, not {base_url!r}")
    if not health_path.startswith("/"):
        problems.append(f"the health path must start with '/', not {health_path!r}")
    return problems


@dataclass(frozen=True)
class _Rate:
    method: LoadMethod
    url: str
    transfer_bytes: int
    requests_per_second: float
    bytes_per_second: float
    # Per instance per minute, in the metric's unit.
    planned: float
    cap_name: str
    cap_value: float


def _rate(
    scaling: Scaling, wanted_per_second: float, origin: str, health_path: str, settings: LoadSettings
) -> _Rate:
    if scaling.metric == "request_count":
        requests_per_second = min(wanted_per_second, settings.requests_per_second_cap)
        return _Rate(
            "GET",
            f"{origin}{health_path}",
            0,
            requests_per_second,
            0.0,
            requests_per_second * 60,
            "LoadRequestsPerSecondCap",
            settings.requests_per_second_cap,
        )
    bytes_per_second = min(wanted_per_second, settings.bytes_per_second_cap)
    transfer_bytes = min(
        MAX_TRANSFER_BYTES, max(MIN_TRANSFER_BYTES, math.ceil(bytes_per_second / NETWORK_REQUESTS_PER_SECOND))
    )
    requests_per_second = min(bytes_per_second / transfer_bytes, settings.requests_per_second_cap)
    bytes_per_second = requests_per_second * transfer_bytes
    if scaling.metric == "network_in":
        method: LoadMethod = "POST"
        url = f"{origin}{UPLOAD_PATH}"
    else:
        method, url = "GET", f"{origin}{DOWNLOAD_PATH}?bytes={transfer_bytes}"
    return _Rate(
        method,
        url,
        transfer_bytes,
        requests_per_second,
        bytes_per_second,
        bytes_per_second * 60,
        "LoadBytesPerSecondCap",
        settings.bytes_per_second_cap,
    )


def _number(value: float) -> str:
    """A rate as a person reads it: 4,000,000, not 4e+06; 0.5 stays 0.5."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _note(scaling: Scaling, aimed: float, planned: float, rate: _Rate, desired_capacity: int) -> str:
    unit, target = scaling.spec.unit, _number(scaling.target)
    if planned <= scaling.target:
        # A network load's requests are capped too: fewer, larger ones may still fit.
        also = "" if rate.cap_name == "LoadRequestsPerSecondCap" else " or LoadRequestsPerSecondCap"
        return (
            f"the caps keep the load at {_number(planned)} {unit}, not above the target {target}: "
            f"no scale-out is expected; raise {rate.cap_name} (now {rate.cap_value:.0f}){also}, "
            "or lower the target"
        )
    if planned < aimed * (1 - 1e-9):
        return (
            f"aimed at {_number(aimed)} {unit}; the caps allow {_number(planned)}, "
            f"still above the target {target}"
        )
    return f"aims at {_number(aimed)} {unit}, twice the target {target}, over {desired_capacity} instances"


def plan_load(
    *,
    run_id: str,
    scaling: Scaling,
    desired_capacity: int,
    base_url: str,
    health_path: str,
    duration_seconds: int,
    settings: LoadSettings,
    now: float | None = None,
) -> LoadPlan:
    """The load for ``scaling`` on a group of ``desired_capacity`` instances, within the caps."""
    now = time.time() if now is None else now
    problems = _problems(scaling, desired_capacity, base_url, health_path, duration_seconds)
    if problems:
        raise InvalidInput("cannot plan the load: " + "; ".join(problems))
    aimed = AIM_FACTOR * scaling.target  # per instance per minute, in the metric's unit
    rate = _rate(scaling, aimed * desired_capacity / 60, base_url.rstrip("/"), health_path, settings)
    planned = rate.planned / desired_capacity
    workers = max(
        1,
        math.ceil(rate.requests_per_second / WORKER_REQUESTS_PER_SECOND),
        math.ceil(rate.bytes_per_second / WORKER_BYTES_PER_SECOND),
    )
    workers = min(workers, settings.workers_cap, MAX_WORKERS)
    return LoadPlan(
        run_id=run_id,
        metric=scaling.metric,
        target=scaling.target,
        desired_capacity=desired_capacity,
        method=rate.method,
        url=rate.url,
        transfer_bytes=rate.transfer_bytes,
        requests_per_second=rate.requests_per_second,
        bytes_per_second=rate.bytes_per_second,
        workers=workers,
        worker_requests_per_second=rate.requests_per_second / workers,
        worker_ids=list(range(workers)),
        round_seconds=min(settings.round_seconds, duration_seconds),
        last_round=math.ceil(duration_seconds / min(settings.round_seconds, duration_seconds)) - 1,
        started_at=utc_iso(now),
        end_at=utc_iso(now + duration_seconds),
        aimed_per_instance_per_minute=aimed,
        planned_per_instance_per_minute=planned,
        capped_below_target=planned <= scaling.target,
        note=_note(scaling, aimed, planned, rate, desired_capacity),
    )


# ---- the worker ------------------------------------------------------------------------------


TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"


def _send_once(url: SplitResult, method: str, body: bytes | None, timeout: float) -> tuple[str, int]:
    """One request, bounded by ``timeout`` whatever the server does: (its HTTP status, or
    ``timeout`` or ``connection_error``; the bytes received)."""
    received = 0
    with bounded_connection(url, timeout) as (connection, expired):
        try:
            headers = dict(REQUEST_HEADERS)
            if body is not None:
                headers["Content-Type"] = "application/octet-stream"
            connection.request(method, request_target(url), body=body, headers=headers)
            response = connection.getresponse()
            # Read to the end, within the cap: the bytes out of the instance are what network_out counts.
            while received <= MAX_TRANSFER_BYTES:
                chunk = response.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                received += len(chunk)
            return (TIMEOUT if expired.is_set() else str(response.status)), received
        except TimeoutError:
            return TIMEOUT, received
        except (OSError, http.client.HTTPException):
            return (TIMEOUT if expired.is_set() else CONNECTION_ERROR), received


def round_length(event: WorkerEvent, now: float) -> float:
    """The round's seconds: its bound, cut at the load's end time (0 once that has passed)."""
    until_end = as_utc(datetime.fromisoformat(event.end_at)).timestamp() - now
    return max(0.0, min(float(event.round_seconds), until_end))


def run_worker(event: WorkerEvent, table: LoadTable) -> Measurement:
    """Send ``event``'s share of the load for one round; record and return what was measured."""
    logger.append_keys(run_id=event.run_id)
    started_wall = time.time()
    started = time.monotonic()
    stop_at = started + round_length(event, started_wall)
    url = urlsplit(event.url)
    body = b"\0" * event.transfer_bytes if event.method == "POST" else None
    interval = 1.0 / event.requests_per_second
    ok = sent = received = 0
    failures: Counter[str] = Counter()
    # Each request is due a whole number of intervals after the pacing's origin (a sum of
    # intervals would drift: ten of 0.1 s come to just under 1 s, room for an eleventh).
    origin, due = started, 0
    while (next_at := origin + due * interval) < stop_at:
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        timeout = min(REQUEST_TIMEOUT_SECONDS, max(stop_at - time.monotonic(), 0.5))
        outcome, got = _send_once(url, event.method, body, timeout)
        if outcome.isdigit() and 200 <= int(outcome) < 300:
            ok += 1
        else:
            failures[outcome] += 1
        # A body is sent once connected (a connection refused or never made sent none).
        sent += len(body) if body is not None and outcome != CONNECTION_ERROR else 0
        received += got
        due += 1
        # A slow answer is not made up for with a burst: the pacing starts again from now.
        now = time.monotonic()
        if origin + due * interval < now:
            origin, due = now, 0
    ended_wall = time.time()
    measurement = Measurement(
        run_id=event.run_id,
        metric=event.metric,
        round=event.round,
        worker=event.worker,
        started_at=utc_iso(started_wall),
        ended_at=utc_iso(ended_wall),
        seconds=round(time.monotonic() - started, 3),
        requests_ok=ok,
        requests_failed=sum(failures.values()),
        bytes_sent=sent,
        bytes_received=received,
        failures=dict(failures),
    )
    table.put_measurement(measurement, ended_wall)
    logger.info("load round", extra=measurement.model_dump(mode="json"))
    return measurement
