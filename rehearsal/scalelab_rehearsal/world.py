"""The simulated world: what AWS itself does during a lab run, on a compressed clock.

moto stores resources, but nothing happens to them by itself: no health
checks, no CloudWatch alarm, no scaling, no Auto Scaling events, no load
balancer answering HTTP. This module plays those parts, ``speed`` times
faster than real time, after AWS's documented behaviour for the lab's
settings:

- An instance boots and its user data starts the app in about
  ``BOOT_SECONDS``; the target group then needs ``HEALTHY_THRESHOLD``
  consecutive passing checks ``HEALTH_INTERVAL_SECONDS`` apart (the target
  group Provision creates), so a target is ``initial`` until then, then
  ``healthy``.
- SSM ``AWS-RunShellScript`` carrying the stress script keeps the targeted
  instances at 100 % CPU for the script's duration, unless cancelled.
- Target tracking's scale-out alarm needs ``ALARM_DATAPOINTS`` one-minute
  datapoints above the target (detailed monitoring), then the group's
  desired capacity grows by one (within MaxSize), moto launches the
  instance, and an "EC2 Instance Launch Successful" event with the shape of
  AWS's own is put on the default event bus.
- The load balancer's DNS name resolves, inside this process, to a local HTTP
  server that sends each request to the next healthy target, answering as the
  built-in app does (its instance id and availability zone), or 503 when no
  target is healthy.
- Scenarios make it misbehave on purpose.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moto.autoscaling.models import autoscaling_backends
from moto.ec2.models import ec2_backends
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup, elbv2_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.ssm.models import ssm_backends

from scalelab_rehearsal import moto_fixes
from scalelab_rehearsal.emulator import ACCOUNT, REGION, REHEARSAL_AGENT, SERVER_POLL_SECONDS, Emulator

LOG = logging.getLogger("scalelab.rehearsal.world")

# One real second is DEFAULT_SPEED simulated seconds.
DEFAULT_SPEED = 3600.0
# AWS behaviour, in simulated seconds.
BOOT_SECONDS = 60.0  # user data: dnf install nodejs, npm install pm2, start the app
# A target group's HealthCheckIntervalSeconds and HealthyThresholdCount are read
# from the group itself; these are Provision's values, used for the warm-up.
HEALTH_INTERVAL_SECONDS = 10.0
HEALTHY_THRESHOLD = 2
ALARM_DATAPOINTS = 3  # target tracking's AlarmHigh: 3 datapoints of 1 minute
DATAPOINT_SECONDS = 60.0
IDLE_CPU = 3.0
STRESSED_CPU = 100.0
# How long "slow-scale-out"'s launch takes once the alarm fired: a day of the
# world's clock, past the rehearsal's deadline at any speed up to 14 000.
SLOW_SCALE_OUT_DELAY_SECONDS = 86400.0
TICK_SECONDS = 0.02  # real seconds between two looks at the world
CAPACITY_ERROR = (
    "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested "
    "(us-east-1a). Our system will be working on provisioning additional capacity. You can currently "
    "get t3.micro capacity by not specifying an Availability Zone in your request or choosing "
    "us-east-1b, us-east-1c, us-east-1d, us-east-1f. Launching EC2 instance failed."
)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    targets_become_healthy: bool = True
    stress_raises_cpu: bool = True
    launch_fails: bool = False
    launch_delay: float = 0.0
    api_fault_rate: float = 0.0


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("pass", "everything works: healthy, spread, scales out under stress"),
        Scenario("never-healthy", "the app never answers health checks", targets_become_healthy=False),
        Scenario(
            "no-scale-out", "stress does not raise CPU, so the group never scales", stress_raises_cpu=False
        ),
        Scenario("launch-fails", "the scale-out launch fails with an EC2 capacity error", launch_fails=True),
        Scenario(
            "slow-scale-out",
            "the alarm fires, but the launch completes only after the deadline",
            launch_delay=SLOW_SCALE_OUT_DELAY_SECONDS,
        ),
        Scenario(
            "flaky-api",
            "a seeded 10 % of the handlers' AWS calls answer throttling or 503; retries absorb them",
            api_fault_rate=0.10,
        ),
    )
}


class UnknownScenario(ValueError):
    pass


def scenario_named(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise UnknownScenario(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _Burn:
    command_id: str
    instance_ids: set[str]
    started: float  # world's seconds
    duration: float
    ended: float | None = None  # when it finished or was cancelled


@dataclass
class _Group:
    # CPU above the target before this moment does not count towards the next alarm.
    not_before: float = 0.0
    launching: bool = False
    failed_once: bool = False
    known_instances: set[str] = field(default_factory=set)


class World:
    """Plays AWS's part on the emulator's resources while a rehearsal runs."""

    def __init__(
        self, emulator: Emulator, scenario: Scenario, speed: float = DEFAULT_SPEED, seed: int = 7
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self.emulator = emulator
        self.scenario = scenario
        self.speed = speed
        self.random = random.Random(seed)  # noqa: S311 - reproducible faults, not secrets
        self.faults_injected = 0
        # A scenario's API faults hit the handlers' calls while this is on; whoever inspects
        # the account after the run turns it off.
        self.inject_api_faults = True
        self._started = time.monotonic()
        self._first_seen: dict[str, float] = {}
        self._burns: dict[str, _Burn] = {}
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._undo: list[Callable[[], None]] = []
        self._ticker: threading.Thread | None = None
        self._front: ThreadingHTTPServer | None = None
        self._round_robin = 0
        self._timers: list[threading.Timer] = []

    # ---- the clock -------------------------------------------------------------------

    def now(self) -> float:
        """Simulated seconds since the world started."""
        return (time.monotonic() - self._started) * self.speed

    # ---- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> World:
        self._undo.append(self._patch_target_health())
        self._undo.append(self._patch_send_command())
        self._start_front_door()
        if self.scenario.api_fault_rate:
            self._undo.append(self._patch_api_faults())
        self._ticker = threading.Thread(target=self._run, name="scalelab-world", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
        while self._undo:
            self._undo.pop()()

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # the world keeps turning; the failure is logged
                LOG.exception("world tick failed")

    # ---- instances and health ----------------------------------------------------------------

    def _seen(self, instance_id: str) -> float:
        """When (world's clock) the instance launched: its boot started then, not when first looked at."""
        with self._lock:
            if instance_id not in self._first_seen:
                launched = self.now()
                try:
                    launch_time = ec2_backends[ACCOUNT][REGION].get_instance(instance_id).launch_time
                    age = (datetime.now(UTC) - launch_time.replace(tzinfo=UTC)).total_seconds()
                    launched -= max(0.0, age) * self.speed
                except Exception:  # noqa: S110 - an instance moto no longer knows: count from now
                    pass
                self._first_seen[instance_id] = launched
            return self._first_seen[instance_id]

    def target_state(
        self, instance_id: str, interval: float = HEALTH_INTERVAL_SECONDS, threshold: int = HEALTHY_THRESHOLD
    ) -> tuple[str, str | None, str | None]:
        """A target: ``initial`` until its app is up and ``threshold`` checks ``interval`` apart passed."""
        if not self.scenario.targets_become_healthy:
            return "unhealthy", "Target.FailedHealthChecks", "Health checks failed with these codes: [502]"
        ready = self._seen(instance_id) + BOOT_SECONDS + threshold * interval
        if self.now() < ready:
            return "initial", "Elb.InitialHealthChecking", "Initial health checks in progress"
        return "healthy", None, None

    def _patch_target_health(self) -> Callable[[], None]:
        original = FakeTargetGroup.health_for
        world = self

        def health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> FakeHealthStatus:
            status = original(self, target, ec2_backend)
            if status.status == "healthy" and target["Id"].startswith("i-"):
                # The target group's own health check settings, as Provision configured them.
                state, reason, description = world.target_state(
                    target["Id"], float(self.health_check_interval_seconds), int(self.healthy_threshold_count)
                )
                return FakeHealthStatus(
                    target["Id"], status.port, status.health_check_port, state, reason, description
                )
            return status

        FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]

        def undo() -> None:
            FakeTargetGroup.health_for = original  # type: ignore[method-assign]

        return undo

    def healthy_targets(self, target_group: FakeTargetGroup) -> list[str]:
        ec2 = ec2_backends[ACCOUNT][REGION]
        return sorted(
            target_id
            for target_id in target_group.targets
            if target_group.health_for({"Id": target_id}, ec2).status == "healthy"
        )

    # ---- Run Command: the stress ------------------------------------------------------------

    def _patch_send_command(self) -> Callable[[], None]:
        backend_class = type(ssm_backends[ACCOUNT][REGION])
        original = backend_class.send_command
        world = self

        def send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            command = original(self, *args, **kwargs)
            world._on_command(command)
            return command

        backend_class.send_command = send_command  # type: ignore[method-assign]

        def undo() -> None:
            backend_class.send_command = original  # type: ignore[method-assign]

        return undo

    def _on_command(self, command: Any) -> None:
        script = "\n".join(command.parameters.get("commands", []))
        match = re.search(r'^DURATION="(\d+)"', script, re.MULTILINE)
        if command.document_name != "AWS-RunShellScript" or match is None:
            return
        # The burn runs for its whole duration: the command is in progress, not done at once.
        command.status = command.status_details = "InProgress"
        for invocation in command.invocations:
            invocation["Status"] = invocation["StatusDetails"] = "InProgress"
        with self._lock:
            self._burns[command.command_id] = _Burn(
                command.command_id, set(command.instance_ids), self.now(), float(match.group(1))
            )

    def _update_burns(self) -> None:
        """End the burns whose duration is over; note when a cancelled one stopped."""
        ssm = ssm_backends[ACCOUNT][REGION]
        now = self.now()
        for burn in list(self._burns.values()):
            if burn.ended is not None:
                continue
            command = ssm.get_command_by_id(burn.command_id)
            if command.status not in moto_fixes.RUNNING:
                burn.ended = now  # cancelled
            elif now >= burn.started + burn.duration:
                burn.ended = burn.started + burn.duration
                command.status = command.status_details = "Success"
                for invocation in command.invocations:
                    invocation["Status"] = invocation["StatusDetails"] = "Success"

    def _high_cpu_window(self, in_service: list[str], target: float) -> tuple[float, float] | None:
        """The latest span in which a burn kept the group's average CPU above ``target``.

        Computed from when the burns started and ended, not from when this
        thread happened to look, so a busy machine cannot make the world miss
        an alarm.
        """
        if not self.scenario.stress_raises_cpu:
            return None
        latest = None
        for burn in self._burns.values():
            stressed = sum(1 for instance_id in in_service if instance_id in burn.instance_ids)
            average = (STRESSED_CPU * stressed + IDLE_CPU * (len(in_service) - stressed)) / len(in_service)
            if average > target:
                window = (burn.started, burn.ended if burn.ended is not None else self.now())
                latest = window if latest is None or window[0] > latest[0] else latest
        return latest

    # ---- the alarm, the scaling activity, the events --------------------------------------------

    def tick(self) -> None:
        backend = autoscaling_backends[ACCOUNT][REGION]
        with self._lock:
            self._update_burns()
        for name, group in list(backend.autoscaling_groups.items()):
            if not name.startswith("scalelab-"):
                continue
            state = self._groups.setdefault(name, _Group())
            in_service = [s.instance.id for s in group.instance_states if s.lifecycle_state == "InService"]
            for instance_id in in_service:
                self._seen(instance_id)
            state.known_instances |= set(in_service)
            target = self._cpu_target(backend, name)
            if target is None or not in_service or state.launching:
                continue
            window = self._high_cpu_window(in_service, target)
            if window is None:
                continue
            start, end = max(window[0], state.not_before), window[1]
            if end - start >= ALARM_DATAPOINTS * DATAPOINT_SECONDS:
                state.not_before = self.now()
                self._scale_out(backend, name, group, state)

    @staticmethod
    def _cpu_target(backend: Any, group_name: str) -> float | None:
        for policy in backend.policies.values():
            if policy.auto_scaling_group_name == group_name and policy.policy_type == "TargetTrackingScaling":
                return float(policy.target_tracking_configuration.__dict__.get("TargetValue", 50.0))
        return None

    def _scale_out(self, backend: Any, name: str, group: Any, state: _Group) -> None:
        if group.desired_capacity >= group.max_size:
            return
        if self.scenario.launch_fails:
            if not state.failed_once:
                state.failed_once = True
                self._put_event(name, group, "EC2 Instance Launch Unsuccessful", None, failed=True)
            return
        state.launching = True
        if self.scenario.launch_delay:
            threading.Timer(
                self.scenario.launch_delay / self.speed, self._launch, (backend, name, state)
            ).start()
        else:
            self._launch(backend, name, state)

    def _launch(self, backend: Any, name: str, state: _Group) -> None:
        group = backend.autoscaling_groups.get(name)
        if group is None or self._stop.is_set():
            return  # torn down while the launch was slow
        before = {s.instance.id for s in group.instance_states}
        backend.set_desired_capacity(name, group.desired_capacity + 1)
        backend.update_attached_target_groups(name)
        for instance_id in sorted({s.instance.id for s in group.instance_states} - before):
            self._seen(instance_id)
            self._put_event(name, group, "EC2 Instance Launch Successful", instance_id)
        # A new instance warms up before the policy acts again (DefaultInstanceWarmup).
        warmup = BOOT_SECONDS + HEALTHY_THRESHOLD * HEALTH_INTERVAL_SECONDS
        self._later(warmup, setattr, state, "launching", False)

    def _later(self, simulated_seconds: float, action: Callable[..., Any], *args: Any) -> None:
        """Do ``action`` after ``simulated_seconds`` of the world's clock, unless the world stops first."""
        timer = threading.Timer(simulated_seconds / self.speed, action, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _put_event(
        self, group_name: str, group: Any, detail_type: str, instance_id: str | None, failed: bool = False
    ) -> None:
        """An Auto Scaling event with the shape of AWS's own (see events/autoscaling-*.json)."""
        started = _now_iso()
        activity = str(uuid.uuid4())
        subnet = group.vpc_zone_identifier.split(",")[0] if group.vpc_zone_identifier else ""
        detail = {
            "Origin": "EC2",
            "Destination": "AutoScalingGroup",
            "StatusCode": "Failed" if failed else "InProgress",
            "AutoScalingGroupName": group_name,
            "ActivityId": activity,
            "AccountId": ACCOUNT,
            "RequestId": str(uuid.uuid4()),
            "StatusMessage": CAPACITY_ERROR if failed else "",
            "EndTime": started,
            "EC2InstanceId": instance_id or "",
            "StartTime": started,
            "Cause": (
                f"At {started} a monitor alarm TargetTracking-{group_name}-AlarmHigh in state ALARM "
                f"triggered policy scalelab-cpu-target changing the desired capacity from "
                f"{group.desired_capacity - (0 if failed else 1)} to "
                f"{group.desired_capacity + (1 if failed else 0)}."
            ),
            "Details": {"Subnet ID": subnet, "Availability Zone": REGION + "a"},
        }
        group_arn = (
            f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:{uuid.uuid4()}"
            f":autoScalingGroupName/{group_name}"
        )
        resources = [group_arn] + (
            [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"] if instance_id else []
        )
        self.emulator.put_aws_events(
            [
                {
                    "Source": "aws.autoscaling",
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "Resources": resources,
                }
            ]
        )

    # ---- the load balancer's front door -------------------------------------------------------

    def _start_front_door(self) -> None:
        world = self

        class FrontDoor(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                host = (self.headers.get("Host") or "").split(":")[0]
                status, body = world.answer(host, self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self._front = ThreadingHTTPServer(("127.0.0.1", 0), FrontDoor)
        threading.Thread(
            target=self._front.serve_forever,
            kwargs={"poll_interval": SERVER_POLL_SECONDS},
            name="scalelab-alb",
            daemon=True,
        ).start()
        front_port = self._front.server_address[1]
        original = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host.endswith(".elb.amazonaws.com"):
                return original("127.0.0.1", front_port, *args, **kwargs)
            return original(host, port, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo

        def undo() -> None:
            socket.getaddrinfo = original

        self._undo.append(undo)

    def answer(self, host: str, path: str) -> tuple[int, dict[str, Any]]:
        """What the load balancer named ``host`` answers for ``path``."""
        elbv2 = elbv2_backends[ACCOUNT][REGION]
        balancer = next((lb for lb in elbv2.load_balancers.values() if lb.dns_name == host), None)
        if balancer is None:
            return 503, {"error": f"no load balancer named {host}"}
        healthy: list[str] = []
        expected_path = "/"
        for listener in balancer.listeners.values():
            for action in listener.default_actions:
                group = elbv2.target_groups.get(action.data.get("TargetGroupArn", ""))
                if group is not None:
                    healthy = self.healthy_targets(group)
                    expected_path = group.health_check_path or "/"
        if not healthy:
            return 503, {"error": "503 Service Temporarily Unavailable"}
        if path.split("?", maxsplit=1)[0] != expected_path:
            return 404, {"error": f"only GET {expected_path} is served"}
        with self._lock:
            chosen = healthy[self._round_robin % len(healthy)]
            self._round_robin += 1
        instance = ec2_backends[ACCOUNT][REGION].get_instance(chosen)
        return 200, {
            "instance_id": chosen,
            "availability_zone": instance.placement.zone,
            "served_at": _now_iso(),
            "uptime_seconds": round(self.now() - self._seen(chosen)),
        }

    # ---- flaky-api -----------------------------------------------------------------------------

    def _patch_api_faults(self) -> Callable[[], None]:
        original = DomainDispatcherApplication.__call__
        world = self

        def call(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Any) -> Any:
            agent = environ.get("HTTP_USER_AGENT", "")
            path = environ.get("PATH_INFO", "")
            # Spare the rehearsal's own calls and Step Functions' calls to Lambda.
            spared = (
                REHEARSAL_AGENT in agent
                or path.startswith("/2015-03-31/functions")
                or path.startswith("/moto-api")
            )
            if (
                world.inject_api_faults
                and not spared
                and world.random.random() < world.scenario.api_fault_rate
            ):
                world.faults_injected += 1
                status, content_type, body = _fault_response(environ, world.random.random() < 0.5)
                start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
                return [body]
            return original(self, environ, start_response)

        DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign]

        def undo() -> None:
            DomainDispatcherApplication.__call__ = original  # type: ignore[method-assign]

        return undo


def _fault_response(environ: dict[str, Any], throttle: bool) -> tuple[str, str, bytes]:
    """Throttling or an internal error, in the error format of the service that was called."""
    credential = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    service = credential.group(1) if credential else ""
    status = "400 Bad Request" if throttle else "500 Internal Server Error"
    if environ.get("HTTP_X_AMZ_TARGET"):  # JSON protocol: DynamoDB, Step Functions, SSM, ...
        code = "ThrottlingException" if throttle else "InternalServerError"
        return status, "application/x-amz-json-1.0", json.dumps({"__type": code, "message": code}).encode()
    if service == "ec2":
        code = "RequestLimitExceeded" if throttle else "InternalError"
        xml = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{code}</Message></Error></Errors>"
            "<RequestID>fault</RequestID></Response>"
        )
    elif service == "s3":
        code = "SlowDown" if throttle else "InternalError"
        status = "503 Slow Down" if throttle else status
        xml = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
    else:  # query protocol: Auto Scaling, ELBv2, SNS, ...
        code = "Throttling" if throttle else "InternalFailure"
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{code}</Message></Error>"
            "<RequestId>fault</RequestId></ErrorResponse>"
        )
    return status, "text/xml", xml.encode()
