"""The load balancer's front door.

The load balancer's DNS name resolves, inside this process, to a local HTTP
server that sends each request to the next healthy target, answering as the
built-in app does, or 503 when no target is healthy. The app's routes
(layers/scalelab/scalelab/assets/app.js, README's "The built-in app"):

- ``GET <health path>``: the instance id and availability zone of the target;
- ``POST /load/upload``: the body is read and dropped as it streams, at most
  ``LOAD_MAX_BYTES`` (1 MiB); a longer one (by Content-Length or as it streams)
  gets 413; else 200 with ``received_bytes`` and the target's identity;
- ``GET /load/download?bytes=N``: exactly N bytes, 1 <= N <= 1 MiB, digits only;
  anything else 400;
- anything else 404.

In "probe-fails", one instance's app keeps crashing and coming back: the load
balancer answers 502 Bad Gateway for each request it sends there (ELB's answer
when a target resets the connection), while the app is up again for each health
check, so the target stays healthy.

Each request sent to a target is recorded in ``Traffic`` with the bytes it moved
into and out of the instance, which the world's metrics turn into CloudWatch's
``RequestCount``, ``RequestCountPerTarget``, ``NetworkIn`` and ``NetworkOut``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from moto.ec2.models import ec2_backends
from moto.elbv2.models import elbv2_backends

from scalelab_rehearsal.emulator import ACCOUNT, REGION, SERVER_POLL_SECONDS
from scalelab_rehearsal.world.clock import Clock, now_iso
from scalelab_rehearsal.world.health import Health
from scalelab_rehearsal.world.scenarios import Scenario
from scalelab_rehearsal.world.traffic import Served, Traffic

UPLOAD_PATH = "/load/upload"
DOWNLOAD_PATH = "/load/download"
LOAD_MAX_BYTES = 1_048_576  # the app's cap on one upload or download (1 MiB)
# What the load generator sends as its User-Agent (steps/load.py): the world counts its requests as a rate.
LOAD_USER_AGENT = "scalelab-load/"
READ_CHUNK = 65_536
DIGITS = re.compile(r"^[0-9]{1,7}$")
# NetworkIn and NetworkOut count what crosses the instance's network interfaces: the HTTP
# message and the packets carrying it. The world counts each request's and answer's HTTP bytes
# as this server reads and writes them, plus a fair overhead for what it cannot see:
# - the headers the load balancer adds to each request it forwards (X-Forwarded-For,
#   X-Forwarded-Proto, X-Forwarded-Port, X-Amzn-Trace-Id): about 160 bytes;
# - the IPv4 and TCP headers (with timestamps) of each segment: 52 bytes per segment of at
#   most 1448 bytes of payload (a 1500-byte MTU). ACKs and the load balancer's kept-alive
#   connections' handshakes are left out: small beside a load's bodies.
FORWARDED_HEADER_BYTES = 160
SEGMENT_PAYLOAD_BYTES = 1448
SEGMENT_HEADER_BYTES = 52


def on_the_wire(payload: int) -> int:
    """The bytes ``payload`` bytes of HTTP take on the network, with their packets' headers."""
    return payload + math.ceil(payload / SEGMENT_PAYLOAD_BYTES) * SEGMENT_HEADER_BYTES


class FrontDoor:
    """Every load balancer's answers, from one local server that their DNS names resolve to."""

    def __init__(
        self, clock: Clock, health: Health, scenario: Scenario, traffic: Traffic | None = None
    ) -> None:
        self.clock = clock
        self.health = health
        self.scenario = scenario
        self.traffic = traffic or Traffic(clock.speed)
        self._server: ThreadingHTTPServer | None = None
        self._round_robin = 0
        self._lock = threading.Lock()

    def open(self) -> Callable[[], None]:
        """Start the server and send the load balancers' names to it; returns the undo of the names."""
        front_door = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                front_door.serve(self)

            def do_POST(self) -> None:  # http.server's naming
                front_door.serve(self)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SERVER_POLL_SECONDS},
            name="scalelab-alb",
            daemon=True,
        ).start()
        front_port = self._server.server_address[1]
        original = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host.endswith(".elb.amazonaws.com"):
                return original("127.0.0.1", front_port, *args, **kwargs)
            return original(host, port, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo

        def undo() -> None:
            socket.getaddrinfo = original

        return undo

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- routing ------------------------------------------------------------------------

    def _route(self, host: str) -> tuple[str, str, str, list[str]] | tuple[int, dict[str, Any]]:
        """The load balancer named ``host``: its ARN, its target group's ARN and health path, and
        the healthy targets; or the answer when there is none to send to."""
        elbv2 = elbv2_backends[ACCOUNT][REGION]
        balancer = next((lb for lb in elbv2.load_balancers.values() if lb.dns_name == host), None)
        if balancer is None:
            return 503, {"error": f"no load balancer named {host}"}
        healthy: list[str] = []
        group_arn = ""
        expected_path = "/"
        for listener in balancer.listeners.values():
            for action in listener.default_actions:
                group = elbv2.target_groups.get(action.data.get("TargetGroupArn", ""))
                if group is not None:
                    group_arn = group.arn
                    healthy = self.health.healthy_targets(group)
                    expected_path = group.health_check_path or "/"
        if not healthy:
            return 503, {"error": "503 Service Temporarily Unavailable"}
        return balancer.arn, group_arn, expected_path, healthy

    def _next(self, healthy: list[str]) -> str:
        with self._lock:
            chosen = healthy[self._round_robin % len(healthy)]
            self._round_robin += 1
        return chosen

    def _identity(self, instance_id: str) -> dict[str, Any]:
        instance = ec2_backends[ACCOUNT][REGION].get_instance(instance_id)
        return {"instance_id": instance_id, "availability_zone": instance.placement.zone}

    def answer(self, host: str, path: str) -> tuple[int, dict[str, Any]]:
        """What the load balancer named ``host`` answers for ``GET path`` (the health path's JSON),
        without counting it as traffic."""
        route = self._route(host)
        if len(route) == 2:
            return route
        _, _, expected_path, healthy = route
        if path.split("?", maxsplit=1)[0] != expected_path:
            return 404, {"error": f"only GET {expected_path} is served"}
        chosen = self._next(healthy)
        if self.scenario.app_crashing and chosen == min(healthy):
            return 502, {"error": "502 Bad Gateway"}
        return 200, self._health_body(chosen)

    def _health_body(self, instance_id: str) -> dict[str, Any]:
        return {
            **self._identity(instance_id),
            "served_at": now_iso(),
            "uptime_seconds": round(self.clock.now() - self.health.seen(instance_id)),
        }

    # ---- serving ------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one request as the target the load balancer chose would, and count its bytes."""
        host = (handler.headers.get("Host") or "").split(":")[0]
        # The request line and headers as the client sent them (the body is counted as read).
        request_bytes = len(handler.requestline) + 2 + len(handler.headers.as_bytes())
        route = self._route(host)
        if len(route) == 2:  # the load balancer answers itself: no target saw the request
            status, body = route
            # The load balancer reads the request before it answers; a client still sending its
            # body would otherwise see the connection reset instead of the 503.
            _drain(handler, limit=LOAD_MAX_BYTES)
            _respond_json(handler, status, body)
            return
        balancer_arn, group_arn, expected_path, healthy = route
        chosen = self._next(healthy)
        if self.scenario.app_crashing and chosen == min(healthy):
            # The app reset the connection: the request reached the instance, no answer came back.
            received = _drain(handler)
            _respond_json(handler, 502, {"error": "502 Bad Gateway"})
            self._count(
                handler, balancer_arn, group_arn, chosen, bytes_in=request_bytes + received, bytes_out=0
            )
            return
        parts = urlsplit(handler.path)
        route_key = f"{handler.command} {parts.path}"
        received = 0
        if route_key == f"POST {UPLOAD_PATH}":
            status, received, sent = self._upload(handler, chosen)
        elif route_key == f"GET {DOWNLOAD_PATH}":
            status, sent = self._download(handler, parts.query)
        elif route_key == f"GET {expected_path}":
            sent = _respond_json(handler, 200, self._health_body(chosen))
        else:
            received = _drain(handler)
            served = f"GET {expected_path}, POST {UPLOAD_PATH}, GET {DOWNLOAD_PATH}?bytes=N"
            sent = _respond_json(handler, 404, {"error": f"only {served} are served"})
        self._count(
            handler, balancer_arn, group_arn, chosen, bytes_in=request_bytes + received, bytes_out=sent
        )

    def _count(
        self,
        handler: BaseHTTPRequestHandler,
        balancer_arn: str,
        group_arn: str,
        instance_id: str,
        *,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        # The load generator names itself (steps/load.py's User-Agent): its requests are a rate.
        sustained = (handler.headers.get("User-Agent") or "").startswith(LOAD_USER_AGENT)
        self.traffic.record(
            Served(
                at=time.monotonic(),
                instance_id=instance_id,
                target_group_arn=group_arn,
                load_balancer_arn=balancer_arn,
                bytes_in=on_the_wire(bytes_in + FORWARDED_HEADER_BYTES),
                bytes_out=on_the_wire(bytes_out),
                sustained=sustained,
            )
        )

    def _upload(self, handler: BaseHTTPRequestHandler, chosen: str) -> tuple[int, int, int]:
        """The body read and dropped; 413 past the cap. Returns the status, the bytes received
        and the bytes sent."""
        too_large = {
            "error": f"the upload is larger than {LOAD_MAX_BYTES} bytes (1 MiB), "
            "the most one request may send"
        }
        length = _content_length(handler)
        if length is not None and length > LOAD_MAX_BYTES:
            handler.close_connection = True  # the body is never read
            return 413, 0, _respond_json(handler, 413, too_large)
        received = _drain(handler, limit=LOAD_MAX_BYTES)
        if received > LOAD_MAX_BYTES:
            handler.close_connection = True
            return 413, received, _respond_json(handler, 413, too_large)
        return (
            200,
            received,
            _respond_json(handler, 200, {"received_bytes": received, **self._identity(chosen)}),
        )

    def _download(self, handler: BaseHTTPRequestHandler, query: str) -> tuple[int, int]:
        given = parse_qs(query, keep_blank_values=True).get("bytes", [])
        size = int(given[0]) if len(given) == 1 and DIGITS.match(given[0]) else 0
        if not 1 <= size <= LOAD_MAX_BYTES:
            error = (
                f"bytes must be given once, as a whole number of bytes in digits from 1 to {LOAD_MAX_BYTES} "
                f"(1 MiB), as in {DOWNLOAD_PATH}?bytes=65536"
            )
            return 400, _respond_json(handler, 400, {"error": error})
        sent = _respond(
            handler,
            200,
            {"Content-Type": "application/octet-stream", "Cache-Control": "no-store"},
            size,
            lambda write: _write_zeros(write, size),
        )
        return 200, sent


def _content_length(handler: BaseHTTPRequestHandler) -> int | None:
    value = handler.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _drain(handler: BaseHTTPRequestHandler, limit: int | None = None) -> int:
    """Read and drop the request's body (Content-Length or chunked); the bytes read. Stops once
    past ``limit``."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        return _drain_chunked(handler, limit)
    left = _content_length(handler) or 0
    received = 0
    while left > 0:
        chunk = handler.rfile.read(min(READ_CHUNK, left))
        if not chunk:
            break
        received += len(chunk)
        left -= len(chunk)
        if limit is not None and received > limit:
            break
    return received


def _drain_chunked(handler: BaseHTTPRequestHandler, limit: int | None) -> int:
    received = 0
    while True:
        size_line = handler.rfile.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError:
            return received
        if size == 0:
            handler.rfile.readline(1024)  # the last chunk's CRLF (no trailers are sent)
            return received
        left = size
        while left > 0:
            chunk = handler.rfile.read(min(READ_CHUNK, left))
            if not chunk:
                return received
            received += len(chunk)
            left -= len(chunk)
        handler.rfile.readline(1024)  # the chunk's CRLF
        if limit is not None and received > limit:
            return received


def _respond_json(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> int:
    payload = json.dumps(body).encode()
    return _respond(
        handler,
        status,
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
        len(payload),
        lambda write: write(payload),
    )


def _respond(
    handler: BaseHTTPRequestHandler,
    status: int,
    headers: dict[str, str],
    length: int,
    body: Callable[[Callable[[bytes], Any]], None],
) -> int:
    """Send the answer; the bytes it took, its status line and headers included."""
    all_headers = {**headers, "Content-Length": str(length), "Connection": "close"}
    handler.send_response(status)
    for name, value in all_headers.items():
        handler.send_header(name, value)
    head = sum(len(f"{name}: {value}\r\n") for name, value in all_headers.items())
    # The status line, the Server and Date headers http.server adds, the blank line.
    head += len(f"HTTP/1.0 {status} {handler.responses.get(status, ('',))[0]}\r\n")
    head += len(f"Server: {handler.version_string()}\r\nDate: {handler.date_time_string()}\r\n\r\n")
    handler.end_headers()
    handler.close_connection = True
    # A client that went away: what was written still went out.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        body(handler.wfile.write)
    return head + length


def _write_zeros(write: Callable[[bytes], Any], size: int) -> None:
    chunk = bytes(min(READ_CHUNK, size))
    left = size
    while left > 0:
        part = min(left, len(chunk))
        write(chunk[:part] if part < len(chunk) else chunk)
        left -= part
