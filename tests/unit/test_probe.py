"""Probe: real HTTP on loopback, through a round-robin front that stands in for the load balancer.

Every server here is a real socket on 127.0.0.1 (a free port each time), so
the probe's own HTTP client, timeouts and error handling run unchanged.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scalelab.contracts.base import parse_event
from scalelab.contracts.probe import ProbeEvent, ProbeResult
from scalelab.core.errors import InvalidInput
from scalelab.core.naming import resource_names
from scalelab.core.settings import ConfigurationError, ProbeSettings
from scalelab.steps.probe import nearest_rank, probe_app
from tests.conftest import FakeLambdaContext

ROOT = Path(__file__).resolve().parents[2]
RUN = "probe-0001"
FAST = 1.0  # seconds: ample for loopback answers
SHORT = 0.2  # seconds: for servers that never answer in time
# Seconds a run of timed-out requests may take beyond its timeouts on a busy host (a test run
# keeps both cores full). Far less than either server would keep a request without the timeout.
BUSY_HOST_SLACK = 3.0


def settings(
    requests: int = 10, ratio: float = 0.9, timeout: float = FAST, ingress: str = "0.0.0.0/0"
) -> ProbeSettings:
    return ProbeSettings.model_validate(
        {
            "PROBE_REQUESTS": requests,
            "PROBE_SUCCESS_RATIO": ratio,
            "PROBE_TIMEOUT_SECONDS": timeout,
            "ALB_INGRESS_CIDR": ingress,
        }
    )


def event(url: str, healthy_count: int = 2) -> ProbeEvent:
    return ProbeEvent(run_id=RUN, url=url, healthy_count=healthy_count)


# ---- loopback servers -------------------------------------------------------------------


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server:
    """A ThreadingHTTPServer on a free loopback port, serving in a thread, counting requests."""

    def __init__(self, handle: Callable[[Quiet], None]) -> None:
        self.hits = 0
        lock = threading.Lock()
        owner = self

        class Handler(Quiet):
            def do_GET(self) -> None:
                with lock:
                    owner.hits += 1
                handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/home") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Hang:
    """Accepts connections and never answers; counts the connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(connection)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/home"

    def connections_seen(self, at_least: int, within: float = 2.0) -> int:
        deadline = time.monotonic() + within
        while len(self.accepted) < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.accepted)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for connection in self.accepted:
            connection.close()


class Lab:
    """Builds loopback servers for one test and shuts every one of them down afterwards."""

    def __init__(self) -> None:
        self.servers: list[Server | Hang] = []
        self.stop = threading.Event()

    def _keep(self, server: Any) -> Any:
        self.servers.append(server)
        return server

    def instance(self, instance_id: str, zone: str = "us-east-1a") -> Server:
        """The built-in app's answer: 200 with the instance's identity."""
        body = json.dumps({"instance_id": instance_id, "availability_zone": zone, "uptime_seconds": 42})
        server: Server = self._keep(Server(lambda handler: handler.answer(200, body.encode())))
        return server

    def failing(self, status: int = 503) -> Server:
        body = json.dumps({"error": "instance identity not known yet"}).encode()
        server: Server = self._keep(Server(lambda handler: handler.answer(status, body)))
        return server

    def plain_text(self) -> Server:
        server: Server = self._keep(Server(lambda handler: handler.answer(200, b"OK", "text/plain")))
        return server

    def drip(self) -> Server:
        """Answers 200 but sends its body one byte at a time, never finishing in time."""
        stop = self.stop

        def handle(handler: Quiet) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            try:
                while not stop.wait(0.02):
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
            except OSError:
                return  # the client hung up

        server: Server = self._keep(Server(handle))
        return server

    def hang(self) -> Hang:
        hang: Hang = self._keep(Hang())
        return hang

    def front(self, *backends: Server) -> Server:
        """The load balancer's stand-in: forwards each GET to the next backend in turn."""
        turn = iter(range(1_000_000))
        lock = threading.Lock()

        def forward(handler: Quiet) -> None:
            with lock:
                backend = backends[next(turn) % len(backends)]
            upstream = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=5)
            try:
                upstream.request("GET", handler.path)
                response = upstream.getresponse()
                body = response.read()
                handler.answer(response.status, body, response.getheader("Content-Type", ""))
            finally:
                upstream.close()

        server: Server = self._keep(Server(forward))
        return server

    def close(self) -> None:
        self.stop.set()
        for server in reversed(self.servers):
            server.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    built = Lab()
    yield built
    built.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---- the probe's verdict ------------------------------------------------------------------


def test_requests_spread_over_two_healthy_instances_pass(lab: Lab) -> None:
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"), lab.instance("i-0bbbbbbbbbbbbbbbb", "us-east-1b"))

    result = probe_app(event(front.url(), healthy_count=2), settings(requests=10))

    assert result.passed is True
    assert result.instances == ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"]
    assert result.requests == 10
    assert result.status_counts == {"200": 10, "timeout": 0, "connection_error": 0}
    assert front.hits == 10
    assert 0 < result.latency_ms.p50 <= result.latency_ms.p95 < FAST * 1000
    assert result.reason == (
        "10/10 answers were 2xx (100% >= 90%) from 2 instances (i-0aaaaaaaaaaaaaaaa, i-0bbbbbbbbbbbbbbbb)"
    )
    probed_at = datetime.fromisoformat(result.probed_at)
    assert probed_at.utcoffset() is not None
    assert probed_at.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - probed_at).total_seconds()) < 60


def test_only_one_instance_answering_while_two_are_healthy_fails_and_names_it(lab: Lab) -> None:
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"))

    result = probe_app(event(front.url(), healthy_count=2), settings(requests=6))

    assert result.passed is False
    assert result.instances == ["i-0aaaaaaaaaaaaaaaa"]
    assert result.status_counts["200"] == 6
    assert "did not spread" in result.reason
    assert "only 1 instance (i-0aaaaaaaaaaaaaaaa) answered 2xx" in result.reason
    assert "2 healthy targets need at least 2" in result.reason


def test_a_backend_answering_503_drops_the_share_below_the_ratio_and_fails(lab: Lab) -> None:
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"), lab.failing(503))

    result = probe_app(event(front.url(), healthy_count=2), settings(requests=10, ratio=0.9))

    assert result.passed is False
    assert result.status_counts == {"200": 5, "503": 5, "timeout": 0, "connection_error": 0}
    assert result.instances == ["i-0aaaaaaaaaaaaaaaa"]
    assert result.reason == (
        "too few 2xx answers: 5/10 answers were 2xx (50% < 90%); the others: 5 x 503; "
        "only 1 instance (i-0aaaaaaaaaaaaaaaa) answered 2xx, while 2 healthy targets need at least 2"
    )


def test_a_few_errors_within_the_ratio_still_pass_and_are_reported(lab: Lab) -> None:
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"), lab.instance("i-0bbbbbbbbbbbbbbbb"), lab.failing())

    result = probe_app(event(front.url(), healthy_count=2), settings(requests=9, ratio=0.6))

    assert result.passed is True
    assert result.status_counts == {"200": 6, "503": 3, "timeout": 0, "connection_error": 0}
    assert result.reason.startswith("6/9 answers were 2xx (66.67% >= 60%) from 2 instances")
    assert result.reason.endswith("the others: 3 x 503")


def test_a_server_that_never_answers_times_out_once_per_request_without_retries(lab: Lab) -> None:
    hang = lab.hang()
    started = time.monotonic()

    result = probe_app(event(hang.url()), settings(requests=3, timeout=SHORT))

    elapsed = time.monotonic() - started
    assert result.passed is False
    assert result.status_counts == {"timeout": 3, "connection_error": 0}
    assert result.requests == 3
    assert hang.connections_seen(at_least=3) == 3
    assert elapsed < 3 * SHORT + BUSY_HOST_SLACK
    assert result.latency_ms.p50 == 0
    assert result.latency_ms.p95 == 0
    assert "3 x timeout" in result.reason


def test_a_probe_timing_out_while_the_ingress_range_is_narrowed_says_lambda_is_outside_it(lab: Lab) -> None:
    hang = lab.hang()

    result = probe_app(event(hang.url()), settings(requests=2, timeout=SHORT, ingress="203.0.113.7/24"))

    assert result.passed is False
    assert result.status_counts["timeout"] == 2
    assert "AlbIngressCidr is 203.0.113.0/24, narrower than 0.0.0.0/0" in result.reason
    assert "the probe runs in Lambda, whose public addresses are outside it" in result.reason
    assert "deploy with AlbIngressCidr=0.0.0.0/0" in result.reason


def test_a_probe_timing_out_with_the_whole_internet_admitted_does_not_blame_the_range(lab: Lab) -> None:
    hang = lab.hang()

    result = probe_app(event(hang.url()), settings(requests=2, timeout=SHORT, ingress="0.0.0.0/0"))

    assert result.passed is False
    assert "AlbIngressCidr" not in result.reason


def test_a_probe_answered_with_errors_does_not_blame_a_narrowed_range(lab: Lab) -> None:
    """The load balancer answered, so the range let the probe in."""
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"), lab.failing(503))

    result = probe_app(event(front.url()), settings(requests=4, ingress="10.0.0.0/8"))

    assert result.passed is False
    assert "AlbIngressCidr" not in result.reason


def test_a_server_that_drips_its_answer_is_cut_off_at_the_timeout(lab: Lab) -> None:
    drip = lab.drip()
    started = time.monotonic()

    result = probe_app(event(drip.url()), settings(requests=2, timeout=SHORT))

    elapsed = time.monotonic() - started
    assert result.status_counts == {"timeout": 2, "connection_error": 0}
    assert drip.hits == 2
    assert elapsed < 2 * SHORT + BUSY_HOST_SLACK


def test_nothing_listening_is_a_connection_error(lab: Lab) -> None:
    url = f"http://127.0.0.1:{free_port()}/home"

    result = probe_app(event(url), settings(requests=4, timeout=SHORT))

    assert result.passed is False
    assert result.status_counts == {"timeout": 0, "connection_error": 4}
    assert result.instances == []
    assert result.latency_ms.p50 == 0
    assert result.reason.startswith(
        "too few 2xx answers: 0/4 answers were 2xx (0% < 90%); the others: 4 x connection_error; "
    )


def test_one_instance_is_enough_when_one_target_is_healthy(lab: Lab) -> None:
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"))

    result = probe_app(event(front.url(), healthy_count=1), settings(requests=5))

    assert result.passed is True
    assert result.instances == ["i-0aaaaaaaaaaaaaaaa"]
    assert result.reason == "5/5 answers were 2xx (100% >= 90%) from 1 instance (i-0aaaaaaaaaaaaaaaa)"


def test_a_2xx_answer_without_an_instance_id_counts_but_names_no_instance(lab: Lab) -> None:
    front = lab.front(lab.plain_text())

    result = probe_app(event(front.url(), healthy_count=1), settings(requests=4))

    assert result.passed is False
    assert result.status_counts["200"] == 4
    assert result.instances == []
    assert "no 2xx answer named the instance that served it" in result.reason


def test_the_handler_with_the_templates_settings_returns_the_result_as_json(
    lab: Lab, load_handler: Callable[[str], ModuleType], lambda_context: FakeLambdaContext
) -> None:
    front = lab.front(lab.instance("i-0aaaaaaaaaaaaaaaa"), lab.instance("i-0bbbbbbbbbbbbbbbb"))
    handler = load_handler("ProbeAppFunction")
    requests = handler.SETTINGS.requests

    answer = handler.lambda_handler({"run_id": RUN, "url": front.url(), "healthy_count": 2}, lambda_context)

    assert json.loads(json.dumps(answer)) == answer
    assert ProbeResult.model_validate(answer).passed is True
    assert answer["status_counts"] == {"200": requests, "timeout": 0, "connection_error": 0}
    assert front.hits == requests


def test_the_handler_rejects_a_malformed_event_by_name(
    load_handler: Callable[[str], ModuleType], lambda_context: FakeLambdaContext
) -> None:
    handler = load_handler("ProbeAppFunction")

    with pytest.raises(InvalidInput, match="invalid Probe event: url"):
        handler.lambda_handler({"run_id": RUN, "url": "https://x/home", "healthy_count": 2}, lambda_context)


# ---- percentiles ----------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_over_observed_values() -> None:
    latencies = [float(value) for value in range(20, 0, -1)]

    assert nearest_rank(latencies, 50) == 10.0
    assert nearest_rank(latencies, 95) == 19.0
    assert nearest_rank([7.5], 95) == 7.5
    assert nearest_rank([], 50) == 0.0


# ---- settings -------------------------------------------------------------------------------


def set_probe_environment(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    environment = {
        "PROBE_REQUESTS": "20",
        "PROBE_SUCCESS_RATIO": "0.9",
        "PROBE_TIMEOUT_SECONDS": "2",
        "ALB_INGRESS_CIDR": "0.0.0.0/0",
    }
    for name, value in {**environment, **values}.items():
        monkeypatch.setenv(name, value)


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    set_probe_environment(monkeypatch)

    loaded = ProbeSettings.from_env()

    assert (loaded.requests, loaded.success_ratio, loaded.timeout_seconds) == (20, 0.9, 2.0)
    assert str(loaded.alb_ingress_cidr) == "0.0.0.0/0"


@pytest.mark.parametrize("cidr", ["everyone", "10.0.0.0/33", "::/0"])
def test_an_ingress_range_that_is_no_ipv4_range_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, cidr: str
) -> None:
    set_probe_environment(monkeypatch, ALB_INGRESS_CIDR=cidr)

    with pytest.raises(ConfigurationError, match="ALB_INGRESS_CIDR"):
        ProbeSettings.from_env()


@pytest.mark.parametrize("ratio", ["0", "1.5", "-0.1", "most"])
def test_a_success_ratio_out_of_range_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, ratio: str
) -> None:
    set_probe_environment(monkeypatch, PROBE_SUCCESS_RATIO=ratio)

    with pytest.raises(ConfigurationError, match="PROBE_SUCCESS_RATIO"):
        ProbeSettings.from_env()


@pytest.mark.parametrize("requests", ["0", "201"])
def test_a_request_count_out_of_range_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, requests: str
) -> None:
    set_probe_environment(monkeypatch, PROBE_REQUESTS=requests)

    with pytest.raises(ConfigurationError, match="PROBE_REQUESTS"):
        ProbeSettings.from_env()


def test_requests_times_timeout_beyond_the_lambda_timeout_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_probe_environment(monkeypatch, PROBE_REQUESTS="100", PROBE_TIMEOUT_SECONDS="1.5")

    with pytest.raises(ConfigurationError) as caught:
        ProbeSettings.from_env()

    assert "PROBE_REQUESTS x PROBE_TIMEOUT_SECONDS = 100 x 1.5 s = 150 s" in str(caught.value)
    assert "120 s timeout; lower one of them" in str(caught.value)


def test_a_missing_setting_is_a_configuration_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    set_probe_environment(monkeypatch)
    monkeypatch.delenv("PROBE_TIMEOUT_SECONDS")

    with pytest.raises(ConfigurationError, match="PROBE_TIMEOUT_SECONDS: Field required"):
        ProbeSettings.from_env()


# ---- the event ------------------------------------------------------------------------------


def test_the_sample_event_names_the_sample_runs_load_balancer() -> None:
    sample = json.loads((ROOT / "events" / "probe_app.json").read_text())

    parsed = parse_event(sample, ProbeEvent, "Probe event")

    host = parsed.url.removeprefix("http://").split("/", 1)[0]
    assert host.startswith(resource_names(parsed.run_id).load_balancer + "-")
    assert host.endswith(".us-east-1.elb.amazonaws.com")
    assert parsed.url.endswith("/home")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "https://scalelab-x-1.us-east-1.elb.amazonaws.com/home"}, "url"),
        ({"url": "scalelab-x-1.us-east-1.elb.amazonaws.com/home"}, "url"),
        ({"url": "http:///home"}, "url"),
        ({"url": "http://user:secret@scalelab-x-1.example/home"}, "url"),
        ({"url": "http://scalelab-x-1.example:99999/home"}, "url"),
        ({"url": "http://scalelab-x-1.example/ho me"}, "url"),
        ({"healthy_count": -1}, "healthy_count"),
        ({"healthy_count": "2"}, "healthy_count"),
        ({"run_id": "Not A Run"}, "run_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_event_is_invalid_input_naming_the_field(change: dict[str, Any], field: str) -> None:
    raw = {"run_id": RUN, "url": "http://scalelab-x-1.us-east-1.elb.amazonaws.com/home", "healthy_count": 2}

    with pytest.raises(InvalidInput, match=f"invalid Probe event: {field}"):
        parse_event({**raw, **change}, ProbeEvent, "Probe event")
