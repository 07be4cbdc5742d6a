"""An HTTP connection bounded by a deadline: the probe's and the load workers' requests."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import SplitResult


class DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection that ends at a deadline, whatever the server does.

    ``HTTPConnection`` gives each address a name resolves to (a load balancer
    has one per zone) the full timeout; here they share it. And since a socket
    timeout bounds each blocking call only, a server sending a byte now and
    then could stretch a request indefinitely: ``cut`` shuts the socket down,
    which ends any read in progress, even after ``HTTPConnection`` has handed
    the socket over to the response (it does when the server closes after it).
    """

    def __init__(self, host: str, port: int, deadline: float) -> None:
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        self.deadline = deadline
        self.opened: socket.socket | None = None

    def connect(self) -> None:
        last_error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        ):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                break
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(remaining)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self.opened = sock
            return
        if last_error is None or self.deadline - time.monotonic() <= 0:
            raise TimeoutError(f"could not connect to {self.host}:{self.port} in time")
        raise last_error

    def cut(self) -> None:
        if self.opened is not None:
            # Already closed means the request is over anyway.
            with contextlib.suppress(OSError):
                self.opened.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        super().close()
        if self.opened is not None:
            self.opened.close()


def request_target(url: SplitResult) -> str:
    """What the request line asks for: the path (``/`` when empty) and its query."""
    target = url.path or "/"
    return f"{target}?{url.query}" if url.query else target


@contextlib.contextmanager
def bounded_connection(
    url: SplitResult, timeout: float
) -> Iterator[tuple[DeadlineConnection, threading.Event]]:
    """A connection to ``url``'s host, cut ``timeout`` seconds from now whatever the server does;
    the event is set once it was cut (an error then means the deadline, not the server)."""
    connection = DeadlineConnection(url.hostname or "", url.port or 80, time.monotonic() + timeout)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        connection.cut()

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield connection, expired
    finally:
        watchdog.cancel()
        with contextlib.suppress(OSError):
            connection.close()
