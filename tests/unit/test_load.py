"""The load of a network or request signal: its plan from the target and the group, and a worker
sending real requests to a local server, measuring them and recording the measurement on the run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import boto3
import pytest

from scalelab.contracts.load import MAX_TRANSFER_BYTES, WorkerEvent
from scalelab.contracts.scaling import Scaling
from scalelab.core.clock import utc_iso
from scalelab.core.errors import InvalidInput
from scalelab.core.settings import LoadSettings, TableSettings
from scalelab.steps import load as load_step
from scalelab.steps.load import plan_load, run_worker
from scalelab.store.load import LoadTable
from scalelab.store.runs import RunTable
from tests.conftest import LOAD_STATE_MACHINE_ARN, TABLE_NAME

RUN = "load-0001"
BASE_URL = "http://scalelab-load-0001-1234.us-east-1.elb.amazonaws.com"
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC).timestamp()


def settings(**overrides: Any) -> LoadSettings:
    values: dict[str, Any] = {
        "state_machine_arn": LOAD_STATE_MACHINE_ARN,
        "requests_per_second_cap": 100.0,
        "bytes_per_second_cap": 5_000_000.0,
        "workers_cap": 10,
        "round_seconds": 60,
        **overrides,
    }
    return LoadSettings(**values)


def plan(
    metric: str, target: float, desired_capacity: int = 2, duration_seconds: int = 600, **caps: Any
) -> Any:
    return plan_load(
        run_id=RUN,
        scaling=Scaling(metric=metric, target=target),  # type: ignore[arg-type]
        desired_capacity=desired_capacity,
        base_url=BASE_URL,
        health_path="/home",
        duration_seconds=duration_seconds,
        settings=settings(**caps),
        now=NOW,
    )


# ---- the plan ----------------------------------------------------------------------------------


def test_a_request_load_aims_at_twice_the_target_over_the_groups_instances() -> None:
    load = plan("request_count", 600, desired_capacity=2)

    # 2 x 600 requests per target per minute x 2 targets = 2400 a minute, 40 a second.
    assert load.requests_per_second == pytest.approx(40)
    assert load.planned_per_instance_per_minute == pytest.approx(1200)
    assert (load.method, load.url, load.transfer_bytes, load.bytes_per_second) == (
        "GET",
        f"{BASE_URL}/home",
        0,
        0,
    )
    assert load.workers == 2
    assert load.worker_ids == [0, 1]
    assert load.worker_requests_per_second == pytest.approx(20)
    assert not load.capped_below_target
    assert (load.started_at, load.end_at) == ("2026-11-25T02:00:00+00:00", "2026-11-25T02:10:00+00:00")
    assert (load.round_seconds, load.last_round) == (60, 9)


def test_a_bigger_group_gets_a_proportionally_bigger_load() -> None:
    assert plan("request_count", 300, desired_capacity=3).requests_per_second == pytest.approx(30)


def test_a_cap_that_keeps_the_load_under_the_target_says_so_and_names_the_cap() -> None:
    load = plan("request_count", 600_000, desired_capacity=2, requests_per_second_cap=50)

    assert load.requests_per_second == pytest.approx(50)
    assert load.planned_per_instance_per_minute == pytest.approx(1500)
    assert load.capped_below_target
    assert "no scale-out is expected" in load.note
    assert "LoadRequestsPerSecondCap (now 50)" in load.note


def test_a_cap_that_still_leaves_the_load_above_the_target_is_no_obstacle() -> None:
    load = plan("request_count", 600, desired_capacity=2, requests_per_second_cap=30)

    assert load.planned_per_instance_per_minute == pytest.approx(900)
    assert not load.capped_below_target
    assert "still above the target 600" in load.note


def test_the_workers_are_capped_by_load_workers_cap() -> None:
    load = plan("request_count", 60_000, desired_capacity=4, requests_per_second_cap=10_000, workers_cap=3)

    assert load.workers == 3
    assert load.worker_requests_per_second == pytest.approx(load.requests_per_second / 3)


def test_a_network_out_load_downloads_at_most_a_mebibyte_a_request() -> None:
    load = plan("network_out", 5_000_000, desired_capacity=2)

    # 2 x 5 MB per instance per minute x 2 instances / 60 s: 333,333 bytes a second.
    assert load.bytes_per_second == pytest.approx(333_333, rel=1e-3)
    assert load.method == "GET"
    assert load.url == f"{BASE_URL}/load/download?bytes={load.transfer_bytes}"
    assert 0 < load.transfer_bytes <= MAX_TRANSFER_BYTES
    assert load.requests_per_second * load.transfer_bytes == pytest.approx(load.bytes_per_second)


def test_a_network_in_load_uploads_bodies_within_the_bytes_cap() -> None:
    load = plan("network_in", 1_000_000_000, desired_capacity=2, bytes_per_second_cap=4_000_000)

    assert (load.method, load.url) == ("POST", f"{BASE_URL}/load/upload")
    # Spread over about ten requests a second.
    assert load.transfer_bytes == 400_000
    assert load.bytes_per_second == pytest.approx(4_000_000)
    assert load.capped_below_target
    assert "LoadBytesPerSecondCap (now 4000000)" in load.note


def test_a_high_network_target_sends_bodies_of_at_most_a_mebibyte() -> None:
    load = plan("network_in", 1_000_000_000, desired_capacity=2, bytes_per_second_cap=50_000_000)

    assert load.transfer_bytes == MAX_TRANSFER_BYTES
    assert load.requests_per_second * MAX_TRANSFER_BYTES == pytest.approx(50_000_000)


def test_a_short_stress_has_one_short_round() -> None:
    load = plan("request_count", 600, duration_seconds=45)

    assert (load.round_seconds, load.last_round) == (45, 0)


@pytest.mark.parametrize(
    ("metric", "desired_capacity", "duration_seconds", "named"),
    [
        ("cpu", 2, 600, "the cpu signal has no HTTP load"),
        ("request_count", 0, 600, "desired capacity must be a whole number >= 1, not 0"),
        ("request_count", 2, 0, "duration must be whole seconds >= 1, not 0"),
    ],
)
def test_bad_input_is_refused_naming_what_is_wrong(
    metric: str, desired_capacity: int, duration_seconds: int, named: str
) -> None:
    target = 50 if metric == "cpu" else 600
    with pytest.raises(InvalidInput, match="cannot plan the load: .*" + named):
        plan(metric, target, desired_capacity=desired_capacity, duration_seconds=duration_seconds)


def test_a_url_that_is_not_the_load_balancers_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"must be http://<dns name>, not 'ftp://x/y'"):
        plan_load(
            run_id=RUN,
            scaling=Scaling(metric="request_count", target=600),
            desired_capacity=2,
            base_url="ftp://x/y",
            health_path="/home",
            duration_seconds=600,
            settings=settings(),
        )


# ---- the worker, against a real local server -----------------------------------------------------


class VirtualClock:
    """The worker's clock, which moves only when the worker sleeps or a server says it took time.

    Counting the requests of a round against the real clock counts the host's speed too: under a
    full test run on two cores a round of 20 once sent 14. On this clock a round sends exactly what
    its pacing allows, while its requests still go to a real server.
    """

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.epoch = time.time()

    def monotonic(self) -> float:
        return self.elapsed

    def time(self) -> float:
        return self.epoch + self.elapsed

    def sleep(self, seconds: float) -> None:
        self.elapsed += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    virtual = VirtualClock()
    monkeypatch.setattr(load_step, "time", virtual)
    return virtual


class Counting:
    """A local HTTP server answering as the app's load endpoints do, counting what it saw.

    ``before_answer`` is called with the request's number (from 1) before it is answered.
    """

    def __init__(self, status: int = 200, before_answer: Callable[[int], None] | None = None) -> None:
        self.requests = 0
        self.received = 0
        self.sent = 0
        self._lock = threading.Lock()
        counting = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _answer(self, body: bytes) -> None:
                if before_answer is not None:
                    before_answer(counting.requests)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                with counting._lock:
                    counting.sent += len(body)

            def do_GET(self) -> None:
                with counting._lock:
                    counting.requests += 1
                size = int(self.path.split("bytes=")[1]) if "bytes=" in self.path else 17
                self._answer(b"x" * size)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with counting._lock:
                    counting.requests += 1
                    counting.received += len(body)
                self._answer(b'{"received_bytes": %d}' % len(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Counting]:
    started = Counting()
    yield started
    started.close()


@pytest.fixture
def load_table(run_table: RunTable) -> LoadTable:
    return LoadTable(TableSettings.from_env())


def worker_event(url: str, method: str = "GET", transfer_bytes: int = 0, **fields: Any) -> WorkerEvent:
    values: dict[str, Any] = {
        "run_id": RUN,
        "metric": "request_count"
        if transfer_bytes == 0
        else "network_in"
        if method == "POST"
        else "network_out",
        "method": method,
        "url": url,
        "transfer_bytes": transfer_bytes,
        "requests_per_second": 20.0,
        "round_seconds": 1,
        "end_at": utc_iso(datetime.now(UTC).timestamp() + 600),
        "worker": 1,
        "round": 3,
        **fields,
    }
    return WorkerEvent(**values)


def stored_item(round_index: int, worker: int) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": f"RUN#{RUN}"}, "sk": {"S": f"LOAD#{round_index:06d}#{worker:03d}"}},
        ConsistentRead=True,
    )
    found: dict[str, Any] = item["Item"]
    return found


def test_a_worker_sends_at_its_rate_for_its_round_and_records_what_the_server_saw(
    server: Counting, load_table: LoadTable, clock: VirtualClock
) -> None:
    measurement = run_worker(worker_event(server.url("/home")), load_table)

    # 20 a second for one second, paced: the first at once, the 20th 0.95 s in.
    assert measurement.requests_ok == server.requests == 20
    assert measurement.requests_failed == 0
    assert measurement.bytes_received == server.sent
    assert measurement.bytes_sent == 0
    assert measurement.seconds == pytest.approx(0.95)
    item = stored_item(3, 1)
    assert item["requests_ok"] == {"N": "20"}
    assert item["requests_failed"] == {"N": "0"}
    assert item["bytes_received"] == {"N": str(server.sent)}
    assert item["metric"] == {"S": "request_count"}
    assert item["run_id"] == {"S": RUN}
    assert {"started_at", "ended_at", "seconds", "bytes_sent", "round", "worker", "expires_at"} <= set(item)


def test_a_slow_answer_is_not_made_up_for_with_a_burst(load_table: LoadTable, clock: VirtualClock) -> None:
    sent_at: list[float] = []

    def first_answer_takes_half_a_second(number: int) -> None:
        sent_at.append(clock.elapsed)
        if number == 1:
            clock.sleep(0.5)

    slow_first = Counting(before_answer=first_answer_takes_half_a_second)
    try:
        measurement = run_worker(worker_event(slow_first.url("/home")), load_table)
    finally:
        slow_first.close()

    # After the answer at 0.5 s, one every 0.05 s until the round's end: 0.5, 0.55, ... 0.95.
    assert measurement.requests_ok == slow_first.requests == 11
    assert sent_at[:2] == pytest.approx([0.0, 0.5])
    gaps = [later - earlier for earlier, later in pairwise(sent_at[1:])]
    assert gaps == pytest.approx([0.05] * 9)


def test_a_round_lasts_its_length_on_the_real_clock(server: Counting, load_table: LoadTable) -> None:
    measurement = run_worker(worker_event(server.url("/home")), load_table)

    # A busy host sends fewer (each request waits its turn), never more than the rate allows.
    assert 1 <= measurement.requests_ok == server.requests <= 21
    assert measurement.seconds >= 0.9
    assert stored_item(3, 1)["requests_ok"] == {"N": str(server.requests)}


def test_an_upload_worker_counts_the_bytes_the_server_received(
    server: Counting, load_table: LoadTable, clock: VirtualClock
) -> None:
    measurement = run_worker(
        worker_event(server.url("/load/upload"), "POST", 50_000, requests_per_second=5.0), load_table
    )

    assert measurement.requests_ok == server.requests == 5
    assert measurement.bytes_sent == server.received == 50_000 * 5
    assert stored_item(3, 1)["bytes_sent"] == {"N": str(50_000 * 5)}


def test_a_download_worker_counts_the_bytes_it_received(
    server: Counting, load_table: LoadTable, clock: VirtualClock
) -> None:
    measurement = run_worker(
        worker_event(server.url("/load/download?bytes=100000"), "GET", 100_000, requests_per_second=5.0),
        load_table,
    )

    assert measurement.requests_ok == server.requests == 5
    assert measurement.bytes_received == 100_000 * 5


def test_answers_that_are_not_2xx_count_as_failed(load_table: LoadTable, clock: VirtualClock) -> None:
    failing = Counting(status=503)
    try:
        measurement = run_worker(worker_event(failing.url("/home"), requests_per_second=10.0), load_table)
    finally:
        failing.close()

    assert measurement.requests_ok == 0
    assert measurement.requests_failed == failing.requests == 10
    assert measurement.failures == {"503": 10}
    assert stored_item(3, 1)["requests_failed"] == {"N": "10"}
    assert stored_item(3, 1)["failures"] == {"M": {"503": {"N": "10"}}}


def test_a_server_that_is_not_there_counts_as_connection_errors(
    load_table: LoadTable, clock: VirtualClock
) -> None:
    gone = Counting()
    url = gone.url("/home")
    gone.close()

    measurement = run_worker(worker_event(url, requests_per_second=5.0), load_table)

    assert measurement.requests_ok == 0
    assert measurement.failures == {"connection_error": 5}
    assert measurement.requests_failed == 5


def test_a_worker_after_the_loads_end_sends_nothing_and_records_that(
    server: Counting, load_table: LoadTable, clock: VirtualClock
) -> None:
    measurement = run_worker(
        worker_event(server.url("/home"), end_at="2026-11-25T02:00:00+00:00"), load_table
    )

    assert server.requests == 0
    assert (measurement.requests_ok, measurement.requests_failed, measurement.seconds) == (0, 0, 0)
    assert stored_item(3, 1)["requests_ok"] == {"N": "0"}


def test_a_worker_event_with_a_body_above_the_apps_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="transfer_bytes"):
        worker_event("http://127.0.0.1:1/load/upload", "POST", MAX_TRANSFER_BYTES + 1)
