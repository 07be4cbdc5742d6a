"""CloudWatch's part: a group's one-minute metrics, on the world's clock.

Each minute AWS publishes, and the world puts into moto's CloudWatch, stamped with the real
time they happen at (the clock the handlers read), one minute of the world's clock apart:

- ``AWS/AutoScaling`` ``GroupInServiceInstances`` (dimension ``AutoScalingGroupName``), for a
  group whose metrics collection is on (Provision enables it);
- ``AWS/EC2`` ``CPUUtilization`` (Percent) averaged over the group's instances (dimension
  ``AutoScalingGroupName``; one-minute datapoints with detailed monitoring);
- ``AWS/EC2`` ``NetworkIn`` and ``NetworkOut`` (Bytes; dimension ``AutoScalingGroupName``): each
  in-service instance's bytes received and sent in the minute, one datum per instance, so the
  group's Average is what target tracking's ASGAverageNetworkIn/Out track and its Sum is the
  group's total (Amazon EC2 User Guide, "Instance metrics": the number of bytes received, or
  sent, on all network interfaces, per period);
- ``AWS/ApplicationELB`` ``RequestCount`` (Sum; dimensions ``LoadBalancer`` and
  ``TargetGroup, LoadBalancer``) and ``RequestCountPerTarget`` (Sum, which for this metric is
  the average per target; dimensions ``TargetGroup`` and ``TargetGroup, LoadBalancer``), the
  target group's requests divided by its healthy targets (Elastic Load Balancing, Application
  Load Balancers guide, "CloudWatch metrics for your Application Load Balancer"). Health
  checks are not requests to these metrics, on AWS as here (the world's health checks send no
  HTTP).

The requests and bytes come from what the front door served (``traffic``), scaled from real to
AWS time: a world minute counts what a real window saw times 60 over the window's real seconds.

A GetMetricData or GetMetricStatistics period is in the world's seconds: 60 s of the world last
``60 / speed`` real seconds, so while the world runs the emulator buckets datapoints by the
period divided by the speed (moto's own answer would put a whole rehearsal into one 60-second
period), and matches a metric's dimensions exactly, as CloudWatch does (moto matches any
datum whose dimensions include the ones asked for, so RequestCountPerTarget by TargetGroup
would also sum the TargetGroup, LoadBalancer series). Judge asks for one-minute periods, as on
AWS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from statistics import fmean
from typing import Any

from moto.autoscaling.models import autoscaling_backends
from moto.cloudwatch.exceptions import InvalidParameterValue
from moto.cloudwatch.models import CloudWatchBackend, MetricDatum, Statistics, cloudwatch_backends
from moto.elbv2.models import elbv2_backends

from scalelab_rehearsal.emulator import ACCOUNT, REGION
from scalelab_rehearsal.world.clock import Clock
from scalelab_rehearsal.world.health import Health
from scalelab_rehearsal.world.stress import Stress
from scalelab_rehearsal.world.traffic import PerMinute, Traffic

DATAPOINT_SECONDS = 60.0  # one-minute metrics, in the world's seconds
# What an instance sends and receives in a minute with no load: the load balancer's health
# checks, the SSM agent's polls, NTP. An estimate, below every network target's minimum
# (contracts/scaling.py), so an idle group never reaches a network target.
IDLE_NETWORK_BYTES_PER_MINUTE = 12_000.0

# Target tracking's predefined metrics (PredefinedMetricSpecification.PredefinedMetricType).
CPU = "ASGAverageCPUUtilization"
NETWORK_IN = "ASGAverageNetworkIn"
NETWORK_OUT = "ASGAverageNetworkOut"
REQUEST_COUNT = "ALBRequestCountPerTarget"
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

    def __init__(self, clock: Clock, stress: Stress, traffic: Traffic, health: Health) -> None:
        self.clock = clock
        self.stress = stress
        self.traffic = traffic
        self.health = health
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def value(self, metric_type: str, in_service: list[str], resource_label: str = "") -> float | None:
        """A predefined metric's value for the minute that ends now, as target tracking reads it:
        the group's average CPU, its instances' average bytes in or out, or the requests per
        healthy target of the target group ``resource_label`` names; None when there is none."""
        if not in_service and metric_type != REQUEST_COUNT:
            return None
        if metric_type == CPU:
            return self.stress.average_cpu(in_service)
        minute = self.traffic.per_minute()
        if metric_type in (NETWORK_IN, NETWORK_OUT):
            moved = minute.bytes_in if metric_type == NETWORK_IN else minute.bytes_out
            return fmean(IDLE_NETWORK_BYTES_PER_MINUTE + moved.get(i, 0.0) for i in in_service)
        if metric_type == REQUEST_COUNT:
            group = target_group_of_label(resource_label)
            if group is None:
                return None
            healthy = self.health.healthy_targets(group)
            return minute.group_requests.get(group.arn, 0.0) / len(healthy) if healthy else None
        return None

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

        original_statistics = CloudWatchBackend.get_metric_statistics

        def get_metric_statistics(  # noqa: PLR0917 (moto's signature)
            backend: CloudWatchBackend,
            namespace: str,
            metric_name: str,
            start_time: datetime,
            end_time: datetime,
            period: int,
            stats: list[str],
            dimensions: list[dict[str, str]],
            unit: str | None = None,
        ) -> list[Statistics]:
            return _statistics(
                backend,
                (namespace, metric_name, dimensions, unit),
                (_aware(start_time), _aware(end_time)),
                stats,
                timedelta(seconds=float(period) / speed),
            )

        CloudWatchBackend.get_metric_data = get_metric_data  # type: ignore[method-assign,assignment]
        CloudWatchBackend.get_metric_statistics = get_metric_statistics  # type: ignore[method-assign,assignment]

        def undo() -> None:
            CloudWatchBackend.get_metric_data = original  # type: ignore[method-assign]
            CloudWatchBackend.get_metric_statistics = original_statistics  # type: ignore[method-assign]

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
            minute = self.traffic.per_minute()
            self._put(name, group, in_service)
            self._put_network(name, in_service, minute)
            self._put_requests(group, minute)

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

    def _put_network(self, name: str, in_service: list[str], minute: PerMinute) -> None:
        """Each instance's bytes in and out of the minute, under the group's dimension."""
        moment = datetime.now(UTC).replace(tzinfo=None)
        dimensions = [{"Name": "AutoScalingGroupName", "Value": name}]
        data = [
            {
                "MetricName": metric,
                "Dimensions": dimensions,
                "Timestamp": moment,
                "Value": IDLE_NETWORK_BYTES_PER_MINUTE + moved.get(instance_id, 0.0),
                "Unit": "Bytes",
            }
            for metric, moved in (("NetworkIn", minute.bytes_in), ("NetworkOut", minute.bytes_out))
            for instance_id in in_service
        ]
        if data:
            cloudwatch_backends[ACCOUNT][REGION].put_metric_data("AWS/EC2", data)

    def _put_requests(self, group: Any, minute: PerMinute) -> None:
        """The minute's requests of each of the group's target groups, and per healthy target."""
        elbv2 = elbv2_backends[ACCOUNT][REGION]
        moment = datetime.now(UTC).replace(tzinfo=None)
        data = []
        for arn in getattr(group, "target_group_arns", None) or []:
            target_group = elbv2.target_groups.get(arn)
            if target_group is None:
                continue
            healthy = self.health.healthy_targets(target_group)
            requests = minute.group_requests.get(arn, 0.0)
            group_dimension = {"Name": "TargetGroup", "Value": arn_suffix(arn)}
            for balancer_arn in target_group.load_balancer_arns:
                balancer_dimension = {"Name": "LoadBalancer", "Value": arn_suffix(balancer_arn)}
                data.append(_count("RequestCount", [group_dimension, balancer_dimension], requests, moment))
                data.append(
                    _count(
                        "RequestCount",
                        [balancer_dimension],
                        minute.balancer_requests.get(balancer_arn, 0.0),
                        moment,
                    )
                )
                if healthy:
                    data.append(
                        _count(
                            "RequestCountPerTarget",
                            [group_dimension, balancer_dimension],
                            requests / len(healthy),
                            moment,
                        )
                    )
            if healthy:
                data.append(
                    _count("RequestCountPerTarget", [group_dimension], requests / len(healthy), moment)
                )
        if data:
            cloudwatch_backends[ACCOUNT][REGION].put_metric_data("AWS/ApplicationELB", data)


def _count(metric: str, dimensions: list[dict[str, str]], value: float, moment: datetime) -> dict[str, Any]:
    return {
        "MetricName": metric,
        "Dimensions": dimensions,
        "Timestamp": moment,
        "Value": value,
        "Unit": "Count",
    }


def arn_suffix(arn: str) -> str:
    """The dimension value CloudWatch names a load balancer or target group by: its ARN's final
    portion, ``app/<name>/<id>`` or ``targetgroup/<name>/<id>``."""
    return arn.split(":", 5)[5].removeprefix("loadbalancer/")


def target_group_of_label(resource_label: str) -> Any | None:
    """The target group an ALBRequestCountPerTarget ResourceLabel names
    (``app/<lb>/<id>/targetgroup/<tg>/<id>``)."""
    _, _, group_part = resource_label.partition("/targetgroup/")
    if not group_part:
        return None
    wanted = "targetgroup/" + group_part
    return next(
        (g for g in elbv2_backends[ACCOUNT][REGION].target_groups.values() if arn_suffix(g.arn) == wanted),
        None,
    )


def _statistics(
    backend: CloudWatchBackend,
    metric: tuple[str, str, list[dict[str, str]], str | None],
    window: tuple[datetime, datetime],
    stats: list[str],
    width: timedelta,
) -> list[Statistics]:
    """GetMetricStatistics on the world's clock: a period in the world's seconds, the metric's
    dimensions matched exactly."""
    namespace, name, dimensions, unit = metric
    start, end = window
    if start >= end:
        raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
    wanted = sorted((d["Name"], d["Value"]) for d in dimensions or [])
    buckets: dict[int, Statistics] = {}
    for datum in backend.get_all_metrics():
        if not isinstance(datum, MetricDatum) or datum.namespace != namespace or datum.name != name:
            continue
        if (unit and datum.unit != unit) or sorted((d.name, d.value) for d in datum.dimensions) != wanted:
            continue
        moment = _aware(datum.timestamp)
        if start <= moment < end:
            index = int((moment - start) / width)
            bucket = buckets.setdefault(
                index, Statistics(stats, (start + width * index).replace(tzinfo=None))
            )
            bucket.metric_data.append(datum)
            bucket.unit = datum.unit
    return [buckets[index] for index in sorted(buckets)]


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
