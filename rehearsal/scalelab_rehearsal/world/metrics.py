"""CloudWatch's part: a group's one-minute metrics, on the world's clock.

Each minute AWS publishes, for a group whose metrics collection is on (Provision enables it),
``AWS/AutoScaling`` ``GroupInServiceInstances``, and EC2 publishes ``AWS/EC2``
``CPUUtilization`` averaged over the group's instances (dimension ``AutoScalingGroupName``;
one-minute datapoints with detailed monitoring). The world puts the same datapoints into
moto's CloudWatch, one per minute of the world's clock, stamped with the real time they happen
at: the clock the handlers read.

A GetMetricData period is in the world's seconds: 60 s of the world last ``60 / speed`` real
seconds, so while the world runs the emulator buckets datapoints by the period divided by the
speed (moto's own answer would put a whole rehearsal into one 60-second period). Judge asks
for one-minute periods, as on AWS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from statistics import fmean
from typing import Any

from moto.autoscaling.models import autoscaling_backends
from moto.cloudwatch.models import CloudWatchBackend, MetricDatum, cloudwatch_backends

from scalelab_rehearsal.emulator import ACCOUNT, REGION
from scalelab_rehearsal.world.clock import Clock
from scalelab_rehearsal.world.stress import Stress

DATAPOINT_SECONDS = 60.0  # one-minute metrics, in the world's seconds
STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "Average": fmean,
    "Maximum": max,
    "Minimum": min,
    "Sum": sum,
    "SampleCount": lambda values: float(len(values)),
}


class Metrics:
    """Puts each scalelab group's datapoints every minute of the world, and answers GetMetricData
    on the world's clock."""

    def __init__(self, clock: Clock, stress: Stress) -> None:
        self.clock = clock
        self.stress = stress
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def install(self) -> Callable[[], None]:
        original = CloudWatchBackend.get_metric_data
        speed = self.clock.speed

        def get_metric_data(
            backend: CloudWatchBackend,
            queries: list[dict[str, Any]],
            start_time: datetime,
            end_time: datetime,
            scan_by: str = "TimestampAscending",
        ) -> list[dict[str, Any]]:
            if any("MetricStat" not in query for query in queries):
                return original(backend, queries, start_time, end_time, scan_by)  # metric math: moto's
            window = (_aware(start_time), _aware(end_time))
            return [_answer(backend, query, window, scan_by, speed) for query in queries]

        CloudWatchBackend.get_metric_data = get_metric_data  # type: ignore[method-assign,assignment]

        def undo() -> None:
            CloudWatchBackend.get_metric_data = original  # type: ignore[method-assign]

        return undo

    def tick(self) -> None:
        now = self.clock.now()
        for name, group in list(autoscaling_backends[ACCOUNT][REGION].autoscaling_groups.items()):
            if not name.startswith("scalelab-"):
                continue
            with self._lock:
                if now - self._last.get(name, -DATAPOINT_SECONDS) < DATAPOINT_SECONDS:
                    continue
                self._last[name] = now
            in_service = [s.instance.id for s in group.instance_states if s.lifecycle_state == "InService"]
            self._put(name, group, in_service)

    def _put(self, name: str, group: Any, in_service: list[str]) -> None:
        # Naive UTC, as moto stamps a datapoint put through the API: GetMetricStatistics compares
        # them with naive times and fails on an aware one.
        moment = datetime.now(UTC).replace(tzinfo=None)
        dimensions = [{"Name": "AutoScalingGroupName", "Value": name}]
        backend = cloudwatch_backends[ACCOUNT][REGION]
        if "GroupInServiceInstances" in group.metrics:  # only once metrics collection is on
            backend.put_metric_data(
                "AWS/AutoScaling",
                [
                    {
                        "MetricName": "GroupInServiceInstances",
                        "Dimensions": dimensions,
                        "Timestamp": moment,
                        "Value": float(len(in_service)),
                        "Unit": "None",
                    }
                ],
            )
        if in_service:
            cpu = self.stress.average_cpu(in_service)
            backend.put_metric_data(
                "AWS/EC2",
                [
                    {
                        "MetricName": "CPUUtilization",
                        "Dimensions": dimensions,
                        "Timestamp": moment,
                        "Value": cpu,
                        "Unit": "Percent",
                    }
                ],
            )


def _answer(
    backend: CloudWatchBackend,
    query: dict[str, Any],
    window: tuple[datetime, datetime],
    scan_by: str,
    speed: float,
) -> dict[str, Any]:
    """One MetricStat query, its period taken in the world's seconds."""
    stat = query["MetricStat"]
    metric = stat["Metric"]
    width = timedelta(seconds=float(stat["Period"]) / speed)
    wanted = sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
    start, end = window
    buckets: dict[int, list[float]] = {}
    for datum in backend.get_all_metrics():
        if not isinstance(datum, MetricDatum):
            continue  # aggregated statistics sets: not what AWS's own metrics put
        if datum.namespace != metric["Namespace"] or datum.name != metric["MetricName"]:
            continue
        if sorted((d.name, d.value) for d in datum.dimensions) != wanted:
            continue
        moment = _aware(datum.timestamp)
        if start <= moment < end:
            buckets.setdefault(int((moment - start) / width), []).append(float(datum.value))
    ordered = sorted(buckets, reverse=scan_by == "TimestampDescending")
    return {
        "id": query["Id"],
        "label": query.get("Label") or f"{metric['MetricName']} {stat['Stat']}",
        "timestamps": [start + width * index for index in ordered],
        "values": [STATISTICS[stat["Stat"]](buckets[index]) for index in ordered],
        "status_code": "Complete",
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
