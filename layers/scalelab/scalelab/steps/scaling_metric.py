"""Where CloudWatch publishes the metric a run's group scales on, and how a person reads its values.

The diagnosis of a run that did not scale out and the report's timeline both read the metric the
policy tracks, as target tracking's own alarms read it:

| ``lab.scaling.metric`` | namespace, metric | dimensions | statistic | unit |
| --- | --- | --- | --- | --- |
| ``cpu`` | ``AWS/EC2`` ``CPUUtilization`` | ``AutoScalingGroupName`` | Average | Percent |
| ``network_in`` | ``AWS/EC2`` ``NetworkIn`` | ``AutoScalingGroupName`` | Average | Bytes |
| ``network_out`` | ``AWS/EC2`` ``NetworkOut`` | ``AutoScalingGroupName`` | Average | Bytes |
| ``request_count`` | ``AWS/ApplicationELB`` ``RequestCountPerTarget`` | ``TargetGroup`` | Sum | Count |

EC2's instance metrics aggregated by ``AutoScalingGroupName`` (detailed monitoring: one-minute
datapoints); NetworkIn and NetworkOut count the bytes of each instance in the period, so their
group Average is the bytes per instance per minute that ASGAverageNetworkIn/Out track (Amazon EC2
User Guide, "Instance metrics"). RequestCountPerTarget's only valid statistic is Sum, which for
it is the average per target, and its dimension names the target group by its ARN's final
portion, ``targetgroup/<name>/<id>`` (Elastic Load Balancing, "CloudWatch metrics for your
Application Load Balancer").
"""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.contracts.scaling import Scaling


@dataclass(frozen=True)
class MetricSource:
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str  # what target tracking compares with the target
    unit: str  # CloudWatch's unit of the datapoints
    title: str  # what it is, as a person reads it
    per_point: str  # what one datapoint counts, after its value
    # The statistic beside it that tells more (the busiest instance), when there is one.
    spread: str | None = None

    @property
    def cloudwatch_dimensions(self) -> list[dict[str, str]]:
        return [{"Name": name, "Value": value} for name, value in self.dimensions]

    def amount(self, value: float) -> str:
        """One datapoint's value in its unit, e.g. ``12.5 %`` or ``1,048,576 bytes in a minute``."""
        if self.unit == "Percent":
            return f"{value:.1f} %"
        return f"{value:,.0f} {self.per_point}"


def metric_source(scaling: Scaling, group_name: str, target_group_arn: str) -> MetricSource:
    """The metric ``scaling`` tracks, for the group ``group_name`` behind ``target_group_arn``."""
    group = (("AutoScalingGroupName", group_name),)
    if scaling.metric == "network_in":
        return MetricSource(
            "AWS/EC2",
            "NetworkIn",
            group,
            "Average",
            "Bytes",
            "The group's average network in",
            "bytes in a minute",
            "Maximum",
        )
    if scaling.metric == "network_out":
        return MetricSource(
            "AWS/EC2",
            "NetworkOut",
            group,
            "Average",
            "Bytes",
            "The group's average network out",
            "bytes in a minute",
            "Maximum",
        )
    if scaling.metric == "request_count":
        return MetricSource(
            "AWS/ApplicationELB",
            "RequestCountPerTarget",
            (("TargetGroup", target_group_dimension(target_group_arn)),),
            "Sum",
            "Count",
            "The target group's requests per target",
            "requests in a minute",
        )
    return MetricSource(
        "AWS/EC2", "CPUUtilization", group, "Average", "Percent", "The group's average CPU", "%", "Maximum"
    )


def target_group_dimension(target_group_arn: str) -> str:
    """CloudWatch's TargetGroup dimension: the ARN's final portion, ``targetgroup/<name>/<id>``."""
    return target_group_arn.split(":", 5)[-1]
