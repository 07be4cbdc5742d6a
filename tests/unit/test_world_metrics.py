"""The world's load metrics, driven with real HTTP: the front door serves the built-in app's load
endpoints, counts each target's requests and bytes, the world puts CloudWatch's one-minute
datapoints of them (RequestCountPerTarget, NetworkIn, NetworkOut) at the world's speed, and the
group's target-tracking policy on each metric scales the group out when the load is above its
target, and not when it is below. Everything is read back from the emulated account."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.world import World, scenario_named
from scalelab_rehearsal.world.front_door import FORWARDED_HEADER_BYTES, LOAD_MAX_BYTES, on_the_wire
from scalelab_rehearsal.world.metrics import IDLE_NETWORK_BYTES_PER_MINUTE
from scalelab_rehearsal.world.traffic import Served, Traffic

# One world minute is 0.1 real second: targets are healthy in about half a real second, and the
# alarm's three minutes pass in well under one.
SPEED = 600.0
HEALTH_PATH = "/health"
GROUP = "scalelab-world-metrics"


@dataclass
class Lab:
    world: World
    dns_name: str
    target_group_arn: str
    load_balancer_arn: str

    @property
    def resource_label(self) -> str:
        balancer = self.load_balancer_arn.split(":loadbalancer/", 1)[1]
        return f"{balancer}/{self.target_group_arn.split(':', 5)[5]}"

    def url(self, path: str) -> str:
        return f"http://{self.dns_name}{path}"


@pytest.fixture
def lab(account: None) -> Iterator[Lab]:
    """A group of one instance behind a load balancer, in the world of the "pass" scenario."""
    with World(Emulator(), scenario_named("pass"), speed=SPEED) as world:
        ec2 = boto3.client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        by_zone = {subnet["AvailabilityZone"]: subnet["SubnetId"] for subnet in subnets}
        two = [by_zone[zone] for zone in sorted(by_zone)[:2]]
        elbv2 = boto3.client("elbv2")
        group_arn = elbv2.create_target_group(
            Name="world-metrics",
            Protocol="HTTP",
            Port=3005,
            VpcId=vpc,
            HealthCheckPath=HEALTH_PATH,
            HealthCheckIntervalSeconds=5,
            HealthyThresholdCount=2,
        )["TargetGroups"][0]["TargetGroupArn"]
        balancer = elbv2.create_load_balancer(Name="world-metrics", Subnets=two)["LoadBalancers"][0]
        elbv2.create_listener(
            LoadBalancerArn=balancer["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": group_arn}],
        )
        template = ec2.create_launch_template(
            LaunchTemplateName="world-metrics",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        autoscaling = boto3.client("autoscaling")
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=GROUP,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=1,
            DesiredCapacity=1,
            MaxSize=3,
            VPCZoneIdentifier=",".join(two),
            TargetGroupARNs=[group_arn],
            DefaultInstanceWarmup=0,
        )
        yield Lab(world, balancer["DNSName"], group_arn, balancer["LoadBalancerArn"])


def put_policy(lab: Lab, metric_type: str, target: float) -> None:
    metric: dict[str, str] = {"PredefinedMetricType": metric_type}
    if metric_type == "ALBRequestCountPerTarget":
        metric["ResourceLabel"] = lab.resource_label
    boto3.client("autoscaling").put_scaling_policy(
        AutoScalingGroupName=GROUP,
        PolicyName=f"{GROUP}-target-tracking",
        PolicyType="TargetTrackingScaling",
        TargetTrackingConfiguration={"PredefinedMetricSpecification": metric, "TargetValue": target},
    )


def request(lab: Lab, path: str, data: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    """One request as the load generator sends it (its User-Agent makes it a rate to the world)."""
    call = urllib.request.Request(
        lab.url(path),
        data=data,
        method="POST" if data is not None else "GET",
        headers={"User-Agent": "scalelab-load/1"},
    )
    try:
        with urllib.request.urlopen(call, timeout=10) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def upload_raw(lab: Lab, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, bytes]:
    """An upload whose headers and body are sent as given (a chunked body in ``chunks``)."""
    connection = http.client.HTTPConnection(lab.dns_name, 80, timeout=10)
    try:
        connection.putrequest("POST", "/load/upload")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        for chunk in chunks:
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        if chunks:
            connection.send(b"0\r\n\r\n")
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the world did not get there in time"
        time.sleep(0.02)


def healthy(lab: Lab) -> None:
    wait_until(lambda: request(lab, HEALTH_PATH)[0] == 200)


@dataclass
class Load:
    requests: int = 0
    seconds: float = 0.0
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def per_real_second(self) -> float:
        return self.requests / self.seconds


def send(lab: Lab, path: str, seconds: float, data: bytes | None = None, rate: float = 80.0) -> Load:
    """Requests at about ``rate`` a real second for ``seconds``, from two threads."""
    load = Load(started=datetime.now(UTC))
    lock = threading.Lock()
    start = time.monotonic()

    def worker() -> None:
        sent = 0
        while (elapsed := time.monotonic() - start) < seconds:
            status, _, _ = request(lab, path, data)
            assert status == 200
            sent += 1
            # Paced: each thread sends half the rate.
            time.sleep(max(0.0, sent / (rate / 2) - elapsed))
        with lock:
            load.requests += sent

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.monotonic() - start
    load.ended = datetime.now(UTC)
    return load


def datapoints(
    namespace: str, metric: str, dimensions: list[dict[str, str]], statistic: str, load: Load
) -> list[float]:
    """The one-minute datapoints of the middle of the load (its ramp in and out left aside)."""
    assert load.started is not None
    assert load.ended is not None
    margin = timedelta(seconds=0.4)
    points = boto3.client("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=load.started + margin,
        EndTime=load.ended - margin,
        Period=60,
        Statistics=[statistic],
    )["Datapoints"]
    assert points, f"no {metric} datapoint during the load"
    return [float(point[statistic]) for point in points]


def desired_capacity() -> int:
    group = boto3.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    capacity: int = group["AutoScalingGroups"][0]["DesiredCapacity"]
    return capacity


def alarm_high() -> dict[str, Any]:
    (policy,) = boto3.client("autoscaling").describe_policies(AutoScalingGroupName=GROUP)["ScalingPolicies"]
    high = next(alarm["AlarmName"] for alarm in policy["Alarms"] if "-AlarmHigh-" in alarm["AlarmName"])
    alarm: dict[str, Any] = boto3.client("cloudwatch").describe_alarms(AlarmNames=[high])["MetricAlarms"][0]
    return alarm


# ---- the front door serves the app's load endpoints ----------------------------------------------


def test_the_front_door_serves_the_apps_load_endpoints_with_their_caps(lab: Lab) -> None:
    healthy(lab)

    status, body, _ = request(lab, "/load/upload", b"x" * 1000)
    answer = json.loads(body)
    assert (status, answer["received_bytes"]) == (200, 1000)
    assert answer["instance_id"].startswith("i-")
    assert answer["availability_zone"].startswith("us-east-1")
    assert request(lab, "/load/upload", b"x" * LOAD_MAX_BYTES)[0] == 200
    # Past the cap by Content-Length (answered before the body is read), or as a chunked body streams.
    for headers, chunks in (
        ({"Content-Length": str(LOAD_MAX_BYTES + 1)}, []),
        ({"Transfer-Encoding": "chunked"}, [b"x" * 600_000, b"x" * 600_000]),
    ):
        status, body = upload_raw(lab, headers, chunks)
        assert status == 413
        assert "1048576 bytes" in json.loads(body)["error"]

    status, body, headers = request(lab, "/load/download?bytes=5")
    assert (status, body, headers["Content-Type"]) == (200, bytes(5), "application/octet-stream")
    assert headers["Cache-Control"] == "no-store"
    assert len(request(lab, f"/load/download?bytes={LOAD_MAX_BYTES}")[1]) == LOAD_MAX_BYTES
    for bad in ("0", str(LOAD_MAX_BYTES + 1), "abc", "-1", "5&bytes=6", ""):
        status, body, _ = request(lab, f"/load/download?bytes={bad}")
        assert status == 400
        assert "bytes must be given once" in json.loads(body)["error"]
    assert request(lab, "/load/download")[0] == 400

    status, body, _ = request(lab, HEALTH_PATH)
    assert status == 200
    assert json.loads(body)["instance_id"].startswith("i-")
    assert request(lab, "/elsewhere")[0] == 404


def test_before_a_target_is_healthy_the_load_balancer_answers_503_and_counts_nothing(lab: Lab) -> None:
    assert request(lab, "/load/upload", b"x" * 10)[0] == 503
    assert lab.world.traffic.per_minute().requests == {}


# ---- the datapoints count the load at the world's speed ------------------------------------------


def test_request_count_per_target_is_the_real_rate_in_a_minute_of_aws_time(lab: Lab) -> None:
    healthy(lab)
    put_policy(lab, "ALBRequestCountPerTarget", 1_000_000)  # out of reach: the group stays at one

    load = send(lab, HEALTH_PATH, seconds=2.0)

    expected = load.per_real_second * 60  # one instance: every request is its own
    group = {"Name": "TargetGroup", "Value": lab.target_group_arn.split(":", 5)[5]}
    balancer = {"Name": "LoadBalancer", "Value": lab.load_balancer_arn.split(":loadbalancer/", 1)[1]}
    per_target = datapoints("AWS/ApplicationELB", "RequestCountPerTarget", [group], "Sum", load)
    assert 0.6 * expected < statistics.median(per_target) < 1.4 * expected
    # The same series under the target group and load balancer, and the request count beside it.
    both = datapoints("AWS/ApplicationELB", "RequestCountPerTarget", [group, balancer], "Sum", load)
    assert statistics.median(both) == pytest.approx(statistics.median(per_target), rel=0.3)
    count = datapoints("AWS/ApplicationELB", "RequestCount", [balancer], "Sum", load)
    assert 0.6 * expected < statistics.median(count) < 1.4 * expected
    assert desired_capacity() == 1


def test_network_in_is_each_instances_bytes_received_in_a_minute(lab: Lab) -> None:
    healthy(lab)
    put_policy(lab, "ASGAverageNetworkIn", 1_000_000_000)
    body = b"x" * 65_536

    load = send(lab, "/load/upload", seconds=2.0, data=body)

    # The body and the request's headers, with the load balancer's and the packets' overhead.
    per_request = on_the_wire(len(body) + FORWARDED_HEADER_BYTES)
    expected = load.per_real_second * 60 * per_request + IDLE_NETWORK_BYTES_PER_MINUTE
    group = [{"Name": "AutoScalingGroupName", "Value": GROUP}]
    received = datapoints("AWS/EC2", "NetworkIn", group, "Average", load)
    assert 0.6 * expected < statistics.median(received) < 1.4 * expected
    # The answers are small: what went out is a sliver of what came in.
    sent = datapoints("AWS/EC2", "NetworkOut", group, "Average", load)
    assert statistics.median(sent) < statistics.median(received) / 20


def test_network_out_is_each_instances_bytes_sent_in_a_minute(lab: Lab) -> None:
    healthy(lab)
    put_policy(lab, "ASGAverageNetworkOut", 1_000_000_000)

    load = send(lab, "/load/download?bytes=65536", seconds=2.0)

    expected = load.per_real_second * 60 * on_the_wire(65_536)
    group = [{"Name": "AutoScalingGroupName", "Value": GROUP}]
    sent = datapoints("AWS/EC2", "NetworkOut", group, "Average", load)
    assert 0.6 * expected < statistics.median(sent) < 1.4 * expected


# ---- the policy's metric scales the group ---------------------------------------------------------

# Each metric's load, and a target well below and one well above what the load sends an instance
# in a minute (80 requests a real second: 4 800 a minute of AWS time).
LOADS: dict[str, tuple[str, bytes | None, float, float]] = {
    "ALBRequestCountPerTarget": (HEALTH_PATH, None, 1_500, 50_000),
    "ASGAverageNetworkIn": ("/load/upload", b"x" * 16_384, 20_000_000, 900_000_000),
    "ASGAverageNetworkOut": ("/load/download?bytes=16384", None, 20_000_000, 900_000_000),
}


@pytest.mark.parametrize("metric_type", list(LOADS))
def test_a_load_above_the_target_scales_the_group_out_on_the_policys_metric(
    lab: Lab, metric_type: str
) -> None:
    path, data, below, _ = LOADS[metric_type]
    healthy(lab)
    put_policy(lab, metric_type, below)

    send(lab, path, seconds=2.0, data=data)

    wait_until(lambda: desired_capacity() >= 2, seconds=5)
    alarm = alarm_high()
    history = boto3.client("cloudwatch").describe_alarm_history(
        AlarmName=alarm["AlarmName"], HistoryItemType="StateUpdate"
    )["AlarmHistoryItems"]
    fired = [
        json.loads(item["HistoryData"])["newState"]
        for item in history
        if item["HistorySummary"].endswith("ALARM")
    ]
    assert fired
    assert f"greater than the threshold ({float(below)})" in fired[0]["stateReason"]
    activities = boto3.client("autoscaling").describe_scaling_activities(AutoScalingGroupName=GROUP)
    assert any(alarm["AlarmName"] in activity["Cause"] for activity in activities["Activities"])


@pytest.mark.parametrize("metric_type", list(LOADS))
def test_a_load_below_the_target_leaves_the_group_as_it_is(lab: Lab, metric_type: str) -> None:
    path, data, _, above = LOADS[metric_type]
    healthy(lab)
    put_policy(lab, metric_type, above)

    send(lab, path, seconds=1.5, data=data)
    time.sleep(0.5)  # five more minutes of the world after the load

    assert desired_capacity() == 1
    assert alarm_high()["StateValue"] != "ALARM"


def test_the_request_count_alarm_watches_the_target_groups_requests_per_target(lab: Lab) -> None:
    put_policy(lab, "ALBRequestCountPerTarget", 500)

    alarm = alarm_high()

    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/ApplicationELB",
        "RequestCountPerTarget",
        "Sum",
    )
    assert alarm["Dimensions"] == [{"Name": "TargetGroup", "Value": lab.target_group_arn.split(":", 5)[5]}]
    (policy,) = boto3.client("autoscaling").describe_policies(AutoScalingGroupName=GROUP)["ScalingPolicies"]
    specification = policy["TargetTrackingConfiguration"]["PredefinedMetricSpecification"]
    assert specification == {
        "PredefinedMetricType": "ALBRequestCountPerTarget",
        "ResourceLabel": lab.resource_label,
    }


def test_a_one_off_burst_counts_once_while_the_same_burst_from_the_load_is_a_rate() -> None:
    # The probe's 20 requests in a fifth of a second: on AWS, 20 requests in that minute.
    speed = 600.0
    traffic = Traffic(speed)
    now = time.monotonic()
    for index in range(20):
        for sustained in (False, True):
            traffic.record(
                Served(now - index * 0.01, f"i-{int(sustained)}", "tg", "lb", 100, 100, sustained=sustained)
            )
    minute = traffic.per_minute(now)
    # Each datapoint the window covers (one per world minute of real time) gets its share.
    datapoints = traffic.window / (60.0 / speed)
    assert minute.requests["i-0"] * datapoints == pytest.approx(20)
    assert minute.requests["i-1"] == pytest.approx(20 * 60.0 / traffic.window)
