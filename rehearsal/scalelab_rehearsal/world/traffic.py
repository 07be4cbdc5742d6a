"""What the front door served: each request's target and bytes, and their rates on the world's clock.

The load is real HTTP at a real rate, while the world runs ``speed`` times faster: a generator
sending r requests per real second is, to the world, r per second of AWS's time, so a world
minute's count is the rate per real second times 60 (at the nominal window of ``60 / speed`` real
seconds, the count in that window times the speed). At a high speed a world minute lasts a few
real milliseconds, in which a steady load sends zero or one request; so a rate is taken over at
least ``MIN_WINDOW_REAL_SECONDS`` of real time, a moving average that makes the one-minute
datapoints of a steady load steady (docs/rehearsal.md, "The load's metrics").

Only the load generator's requests are a rate. Any other request (the probe's twenty, a person's
curl) is a one-off: AWS counts it once, in the minute it came, so the world spreads it over the
datapoints its window covers, adding up to one (scaled like the load, the probe's burst of a fifth
of a second would read as thousands of requests a minute).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

# The shortest real window a rate is taken over: long enough that a load of a few dozen
# requests a second counts several per window, short enough that a load of a few real seconds
# reaches its full rate quickly.
MIN_WINDOW_REAL_SECONDS = 0.25
# Served requests are kept this long (real seconds): several windows' worth.
KEEP_REAL_SECONDS = 5.0


@dataclass(frozen=True)
class Served:
    at: float  # time.monotonic()
    instance_id: str
    target_group_arn: str
    load_balancer_arn: str
    bytes_in: int  # into the instance: the request as the load balancer forwards it
    bytes_out: int  # out of the instance: the response
    sustained: bool = True  # the load generator's: a rate, not a one-off


@dataclass(frozen=True)
class PerMinute:
    """What a world minute saw, at the rate of the last window."""

    requests: dict[str, float]  # by instance id
    bytes_in: dict[str, float]
    bytes_out: dict[str, float]
    group_requests: dict[str, float]  # by target group ARN
    balancer_requests: dict[str, float]  # by load balancer ARN


class Traffic:
    """The requests the front door sent to targets, kept for a few real seconds."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._served: deque[Served] = deque()
        self._lock = threading.Lock()

    @property
    def window(self) -> float:
        """The real seconds a rate is taken over: a world minute, or the minimum window."""
        return max(60.0 / self.speed, MIN_WINDOW_REAL_SECONDS)

    def record(self, served: Served) -> None:
        with self._lock:
            self._served.append(served)
            while self._served and served.at - self._served[0].at > KEEP_REAL_SECONDS:
                self._served.popleft()

    def per_minute(self, now: float | None = None) -> PerMinute:
        """The requests and bytes of one world minute, per target, per target group, per load
        balancer: what the last window served, scaled from its real seconds to 60 s of AWS time."""
        now = time.monotonic() if now is None else now
        window = self.window
        # A rate's count over the window, at AWS's minute; a one-off's share of each datapoint
        # that sees it (one per world minute of real time), so that it counts once in all.
        rate_scale = 60.0 / window
        once_scale = (60.0 / self.speed) / window
        minute = PerMinute({}, {}, {}, {}, {})
        with self._lock:
            recent = [served for served in self._served if now - served.at < window]
        for served in recent:
            scale = rate_scale if served.sustained else once_scale
            for totals, key, amount in (
                (minute.requests, served.instance_id, 1),
                (minute.bytes_in, served.instance_id, served.bytes_in),
                (minute.bytes_out, served.instance_id, served.bytes_out),
                (minute.group_requests, served.target_group_arn, 1),
                (minute.balancer_requests, served.load_balancer_arn, 1),
            ):
                totals[key] = totals.get(key, 0.0) + amount * scale
        return minute
