"""The built-in app, run for real on the Node.js the instances install, answering real HTTP.

A fake instance metadata service stands in for IMDSv2; everything else is the
app as pm2 runs it on an instance.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.support.node import ASSETS, node

TOKEN = "fake-imds-token"
MIB = 1048576


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2 as an EC2 instance sees it: a PUT for a token, then GETs that carry it."""

    metadata: ClassVar[dict[str, str]] = {
        "/latest/meta-data/instance-id": "i-0123456789abcdef0",
        "/latest/meta-data/placement/availability-zone": "us-east-1b",
    }

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._answer(200, TOKEN)
        else:
            self._answer(400, "bad token request")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self._answer(401, "IMDSv2 token required")
        elif self.path in self.metadata:
            self._answer(200, self.metadata[self.path])
        else:
            self._answer(404, "not found")

    def _answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def imds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class App:
    """The app as a process: its base URL, its port and its pid (to read its memory)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def peak_memory_kib(self) -> int:
        """The process's peak resident set (VmHWM), which only ever grows."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


def start_app(imds_endpoint: str, ready_status: int) -> Iterator[App]:
    port = free_port()
    process = subprocess.Popen(
        [node(), str(ASSETS / "app.js")],
        env={
            "PORT": str(port),
            "HEALTH_PATH": "/home",
            "IMDS_ENDPOINT": imds_endpoint,
            "PATH": "/usr/bin:/bin",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    app = App(process, port)
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                status, _ = get(f"{app.url}/home")
                if status == ready_status:
                    break
            except (ConnectionError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(
                    f"the app did not answer within 15 s: {process.stdout and process.stdout.read1()!r}"
                )
            time.sleep(0.05)
        yield app
    finally:
        process.terminate()
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def running(imds: str) -> Iterator[App]:
    """One app for the module's tests (each starts in about a second); none changes its state."""
    yield from start_app(imds, ready_status=200)


@pytest.fixture
def own_app(imds: str) -> Iterator[App]:
    """An app no other test has used: its memory figures are its own."""
    yield from start_app(imds, ready_status=200)


@pytest.fixture
def app(running: App) -> str:
    return running.url


@pytest.fixture
def app_without_identity() -> Iterator[str]:
    """The app on an instance whose metadata service does not answer (yet)."""
    for started in start_app(f"http://127.0.0.1:{free_port()}", ready_status=503):
        yield started.url


def request(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    sent = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def upload_head(*headers: bytes) -> bytes:
    return b"\r\n".join([b"POST /load/upload HTTP/1.1", b"Host: app", *headers]) + b"\r\n\r\n"


def read_answer(connection: socket.socket) -> bytes:
    """Everything the app sends until it closes the connection (or resets it after its answer)."""
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


# -- the health path ---------------------------------------------------------------------------


def test_the_app_answers_home_with_its_instance_identity(app: str) -> None:
    status, body = get(f"{app}/home")

    assert status == 200
    assert body["instance_id"] == "i-0123456789abcdef0"
    assert body["availability_zone"] == "us-east-1b"


def test_the_app_keeps_idle_connections_longer_than_the_load_balancers_60_second_idle_timeout(
    running: App,
) -> None:
    with running.connect() as connection:
        connection.sendall(b"GET /home HTTP/1.1\r\nHost: app\r\n\r\n")

        head = connection.recv(65536).partition(b"\r\n\r\n")[0]

    assert b"\r\nConnection: keep-alive\r\n" in head
    assert b"\r\nKeep-Alive: timeout=65\r\n" in head


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin"),
        ("PUT", "/home"),
        ("GET", "/load/upload"),
        ("POST", "/load/download"),
        ("GET", "/load"),
    ],
)
def test_the_app_answers_other_paths_and_methods_with_404_naming_what_it_serves(
    app: str, method: str, path: str
) -> None:
    status, _, body = request(method, f"{app}{path}", b"x" if method in {"PUT", "POST"} else None)

    assert status == 404
    error = json.loads(body)["error"]
    assert "GET /home" in error
    assert "POST /load/upload" in error
    assert "GET /load/download?bytes=N" in error


def test_a_request_target_that_is_no_url_is_400_and_the_app_serves_on(running: App) -> None:
    with running.connect() as connection:
        connection.sendall(b"GET http://[ HTTP/1.1\r\nHost: app\r\n\r\n")

        answer = connection.recv(65536)

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"not a valid URL" in answer
    assert get(f"{running.url}/home")[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/home", None), ("POST", "/load/upload", b"x" * 1000), ("GET", "/load/download?bytes=10", None)],
)
def test_every_endpoint_answers_503_until_the_instance_knows_its_identity(
    app_without_identity: str, method: str, path: str, body: bytes | None
) -> None:
    status, _, answer = request(method, f"{app_without_identity}{path}", body)

    assert status == 503
    assert json.loads(answer) == {"error": "instance identity not known yet"}


# -- POST /load/upload ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65537, MIB])
def test_an_upload_up_to_1_mib_is_counted_and_answered_with_the_instance(app: str, size: int) -> None:
    status, _, body = request("POST", f"{app}/load/upload", b"\xff" * size)

    assert status == 200
    assert json.loads(body) == {
        "received_bytes": size,
        "instance_id": "i-0123456789abcdef0",
        "availability_zone": "us-east-1b",
    }


def test_a_chunked_upload_is_counted_as_it_streams(app: str) -> None:
    status, _, body = request("POST", f"{app}/load/upload", iter([b"a" * 100_000, b"b" * 200_000, b"c"]))  # type: ignore[arg-type]

    assert status == 200
    assert json.loads(body)["received_bytes"] == 300_001


def test_an_upload_declaring_more_than_1_mib_is_refused_before_any_of_it_is_sent(running: App) -> None:
    with running.connect() as connection:
        connection.sendall(upload_head(b"Content-Length: 1048577"))

        answer = read_answer(connection)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in head
    assert b"1048576 bytes" in body


def test_an_upload_asking_to_continue_is_refused_over_1_mib_and_invited_within_it(running: App) -> None:
    with running.connect() as over, running.connect() as within:
        over.sendall(upload_head(b"Content-Length: 2000000", b"Expect: 100-continue"))
        within.sendall(upload_head(b"Content-Length: 5", b"Expect: 100-continue"))

        refused = read_answer(over)
        invited = within.recv(4096)
        within.sendall(b"hello")
        answered = within.recv(4096)

    assert refused.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in refused
    assert invited.startswith(b"HTTP/1.1 100 Continue")
    assert answered.startswith(b"HTTP/1.1 200 ")
    assert b'"received_bytes":5' in answered


def test_a_streamed_upload_passing_1_mib_is_answered_413_and_no_longer_read(running: App) -> None:
    offered = 256 * MIB
    chunk = b"z" * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with running.connect() as connection:
        connection.sendall(upload_head(b"Transfer-Encoding: chunked"))
        try:
            while sent < offered:
                connection.sendall(frame)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

        answer = read_answer(connection)

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"1048576 bytes" in answer
    # The app closed the connection: only what the sockets' buffers held went
    # out after the cap, not the rest of the 256 MiB.
    assert sent < 32 * MIB


def test_concurrent_uploads_cost_no_memory_per_byte_uploaded(own_app: App) -> None:
    """256 uploads of 1 MiB, all in flight at once: an app holding bodies needs 256 MiB more."""

    def upload_all_at_once(count: int) -> None:
        body = b"m" * MIB
        connections = [own_app.connect() for _ in range(count)]
        try:
            for connection in connections:
                connection.sendall(upload_head(b"Content-Length: %d" % MIB))
                connection.sendall(body[:-1])
            # Time for the app to read what the sockets' buffers still hold.
            time.sleep(1)
            for connection in connections:
                connection.sendall(body[-1:])
            for connection in connections:
                answer = connection.recv(4096)
                assert answer.startswith(b"HTTP/1.1 200 "), answer
                assert b'"received_bytes":1048576' in answer
        finally:
            for connection in connections:
                connection.close()

    # The first uploads grow the heap to its working size, whatever the app does with bodies.
    upload_all_at_once(32)
    settled = own_app.peak_memory_kib()

    upload_all_at_once(256)

    grown_mib = (own_app.peak_memory_kib() - settled) / 1024
    assert grown_mib < 64, f"the app's peak memory grew by {grown_mib:.0f} MiB for 256 MiB uploaded"


# -- GET /load/download -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 65535, 65536, 65537, 1000003, MIB])
def test_a_download_answers_exactly_the_bytes_asked_for_uncached(app: str, size: int) -> None:
    status, headers, body = request("GET", f"{app}/load/download?bytes={size}")

    assert status == 200
    assert len(body) == size
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Length"] == str(size)


@pytest.mark.parametrize(
    "query",
    [
        *("", "?bytes=", "?bytes=0", "?bytes=1048577", "?bytes=99999999999"),
        *("?bytes=1e6", "?bytes=-1", "?bytes=0x10", "?bytes=+1", "?bytes=%201", "?bytes=1.0"),
        *("?bytes=1&bytes=2", "?bytes=1&bytes=1", "?size=10"),
    ],
)
def test_a_download_without_one_whole_number_of_bytes_in_range_is_400_naming_the_rule(
    app: str, query: str
) -> None:
    status, headers, body = request("GET", f"{app}/load/download{query}")

    assert status == 400
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert "bytes must be given once" in error
    assert "from 1 to 1048576" in error


def test_a_download_ignores_other_query_parameters(app: str) -> None:
    status, _, body = request("GET", f"{app}/load/download?nonce=abc&bytes=3")

    assert status == 200
    assert len(body) == 3


# -- slow clients -----------------------------------------------------------------------------


def test_headers_still_incomplete_after_10_seconds_are_cut_off_but_an_idle_kept_connection_is_not(
    running: App,
) -> None:
    request_home = b"GET /home HTTP/1.1\r\nHost: app\r\n\r\n"
    with running.connect() as kept, running.connect() as slow:
        kept.sendall(request_home)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
        slow.sendall(b"GET /home HTTP/1.1\r\nHost: app\r\n")
        started = time.monotonic()
        slow.settimeout(0.5)
        cut_off = b""
        while time.monotonic() - started < 30 and not cut_off:
            try:
                slow.sendall(b"X-Slow: 1\r\n")
                cut_off = slow.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        waited = time.monotonic() - started

        kept.sendall(request_home)
        answered = kept.recv(65536)

    assert cut_off.startswith(b"HTTP/1.1 408 ")
    assert 9 < waited < 20
    assert answered.startswith(b"HTTP/1.1 200 ")
