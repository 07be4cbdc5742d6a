"""The load balancer's front door.

The load balancer's DNS name resolves, inside this process, to a local HTTP
server that sends each request to the next healthy target, answering as the
built-in app does (its instance id and availability zone), or 503 when no
target is healthy. In "probe-fails", one instance's app keeps crashing and
coming back: the load balancer answers 502 Bad Gateway for each request it sends
there (ELB's answer when a target resets the connection), while the app is up
again for each health check, so the target stays healthy.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moto.ec2.models import ec2_backends
from moto.elbv2.models import elbv2_backends

from scalelab_rehearsal.emulator import ACCOUNT, REGION, SERVER_POLL_SECONDS
from scalelab_rehearsal.world.clock import Clock, now_iso
from scalelab_rehearsal.world.health import Health
from scalelab_rehearsal.world.scenarios import Scenario


class FrontDoor:
    """Every load balancer's answers, from one local server that their DNS names resolve to."""

    def __init__(self, clock: Clock, health: Health, scenario: Scenario) -> None:
        self.clock = clock
        self.health = health
        self.scenario = scenario
        self._server: ThreadingHTTPServer | None = None
        self._round_robin = 0
        self._lock = threading.Lock()

    def open(self) -> Callable[[], None]:
        """Start the server and send the load balancers' names to it; returns the undo of the names."""
        front_door = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                host = (self.headers.get("Host") or "").split(":")[0]
                status, body = front_door.answer(host, self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
                    healthy = self.health.healthy_targets(group)
                    expected_path = group.health_check_path or "/"
        if not healthy:
            return 503, {"error": "503 Service Temporarily Unavailable"}
        if path.split("?", maxsplit=1)[0] != expected_path:
            return 404, {"error": f"only GET {expected_path} is served"}
        with self._lock:
            chosen = healthy[self._round_robin % len(healthy)]
            self._round_robin += 1
        if self.scenario.app_crashing and chosen == min(healthy):
            return 502, {"error": "502 Bad Gateway"}
        instance = ec2_backends[ACCOUNT][REGION].get_instance(chosen)
        return 200, {
            "instance_id": chosen,
            "availability_zone": instance.placement.zone,
            "served_at": now_iso(),
            "uptime_seconds": round(self.clock.now() - self.health.seen(chosen)),
        }
