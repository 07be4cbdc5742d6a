"""What `sam local invoke` needs to run the functions offline: a Docker engine, the
stand-in base image, the built stack, the emulated account, and a way from the
container to the emulator.

The functions are black boxes here: nothing in this folder imports the layer.
Each invoke is a real `sam local invoke` process, its result read from stdout.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / ".aws-sam" / "build"
BIN = Path(sys.executable).parent
REGION = "us-east-1"
STACK_NAME = "scalelab"
# Exit status of scripts/docker-engine and scripts/lambda-base-image: not possible as this user.
NOT_POSSIBLE_HERE = 3
# The emulator deploys the stack in about a second; a loaded machine gets more.
EMULATOR_READY_SECONDS = 120
# One invoke: the small per-invoke image (about 2 s), the container, the handler.
INVOKE_TIMEOUT_SECONDS = 300
# Fake credentials only: the container talks to the emulator, never to AWS.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
# Variables the functions' environment gains for the local run only. Lambda passes a
# function nothing that its configuration does not declare, and `sam local invoke
# --env-vars` only overrides declared variables, so a copy of the built template
# declares these; the deployed template stays as it is.
LOCAL_ONLY_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS")
# Clients the layer does not configure would otherwise retry an unreachable
# endpoint for about 20 s per call; two attempts fail within seconds.
MAX_ATTEMPTS = "2"
# ioctl: the IPv4 address of a network interface (linux/sockios.h).
SIOCGIFADDR = 0x8915


def _script(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / name)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )


def _ready_or_skip(name: str) -> None:
    """Run a set-up script: it is done, or it says what is missing (a skip), or it failed."""
    done = _script(name)
    reason = done.stderr.strip()
    if done.returncode == NOT_POSSIBLE_HERE:
        pytest.skip(f"sam local invoke cannot run here: {reason}")
    if done.returncode != 0:
        pytest.fail(f"scripts/{name} failed (exit {done.returncode}): {reason}")
    if reason:
        sys.stderr.write(reason + "\n")


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """A Docker engine answers, and the base image SAM CLI asks for is there."""
    _ready_or_skip("docker-engine")
    _ready_or_skip("lambda-base-image")


@pytest.fixture(scope="session")
def local_template(docker_ready: None) -> Path:
    """The built template, with the local-only variables declared for every function."""
    built = BUILD_DIR / "template.yaml"
    if not built.exists():
        pytest.fail(f"{built.relative_to(ROOT)} is missing: run `make build` first")
    template = yaml.safe_load(built.read_text())
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    variables.update(dict.fromkeys(LOCAL_ONLY_VARIABLES, ""))
    # Next to the built one, so its relative CodeUri and ContentUri paths still resolve.
    derived = BUILD_DIR / "local-invoke.template.yaml"
    derived.write_text(yaml.safe_dump(template, sort_keys=False))
    return derived


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class EmulatedAccount:
    endpoint: str
    process: subprocess.Popen[str]

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)  # type: ignore[call-overload]

    def function_environments(self) -> dict[str, dict[str, str]]:
        """Each deployed function's environment, by logical id: the stack's real names."""
        lambdas = self.client("lambda")
        resources = self.client("cloudformation").list_stack_resources(StackName=STACK_NAME)
        environments = {}
        for summary in resources["StackResourceSummaries"]:
            if summary["ResourceType"] != "AWS::Lambda::Function":
                continue
            configuration = lambdas.get_function_configuration(FunctionName=summary["PhysicalResourceId"])
            variables = configuration.get("Environment", {}).get("Variables", {})
            environments[summary["LogicalResourceId"]] = {
                name: str(value) for name, value in variables.items()
            }
        return environments


@pytest.fixture(scope="session")
def emulated_account(docker_ready: None) -> Iterator[EmulatedAccount]:
    """`scalelab emulator` in its own process, from this checkout's rehearsal and layer."""
    port = _free_port()
    environment = {
        **os.environ,
        **FAKE_CREDENTIALS,
        "PYTHONPATH": os.pathsep.join(str(ROOT / part) for part in ("rehearsal", "layers/scalelab")),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "scalelab_rehearsal.cli", "emulator", "--port", str(port)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = _read_until_ready(process)
    found = re.search(r"endpoint\s+(http://127\.0\.0\.1:\d+)", banner)
    assert found, f"the emulator printed no endpoint:\n{banner}"
    try:
        yield EmulatedAccount(found.group(1), process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _read_until_ready(process: subprocess.Popen[str]) -> str:
    """The emulator's banner, up to the line that says it is up; a deadline, not a hang."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + EMULATOR_READY_SECONDS
    timer = threading.Timer(EMULATOR_READY_SECONDS, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops the emulator"):
                return "".join(lines)
    finally:
        timer.cancel()
    waited = "timed out" if time.monotonic() >= deadline else f"exited with {process.wait()}"
    pytest.fail(f"the emulator {waited} before it was ready:\n{''.join(lines)}")


def _bridge_address() -> str:
    """The host's address on Docker's default bridge, where SAM CLI's containers are.

    The default bridge does not list its gateway in IPAM; the address is the bridge
    interface's own (docker0 unless dockerd was told otherwise).
    """
    shown = subprocess.run(
        [
            "docker",
            "network",
            "inspect",
            "bridge",
            "--format",
            '{{index .Options "com.docker.network.bridge.name"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    interface = shown.stdout.strip() or "docker0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
    return socket.inet_ntoa(answer[20:24])


class Relay:
    """Forward TCP from the Docker bridge's gateway to the emulator on loopback.

    SAM CLI 1.170 attaches a container to no network for `--docker-network host`
    (it only skips connecting one), so the container is on the default bridge,
    where the host's 127.0.0.1 is out of reach. The emulator listens on loopback
    only; this relay opens it to the bridge, and to nothing else.
    """

    def __init__(self, listen_host: str, target_port: int) -> None:
        self._server = socket.create_server((listen_host, 0))
        self._target_port = target_port
        self.address = f"{listen_host}:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with source, sink:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:  # the other direction closed both
                return

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="session")
def container_endpoint(emulated_account: EmulatedAccount) -> Iterator[str]:
    """The emulator's endpoint as a Lambda container sees it."""
    relay = Relay(_bridge_address(), int(emulated_account.endpoint.rsplit(":", 1)[1]))
    yield f"http://{relay.address}"
    relay.close()


@pytest.fixture(scope="session")
def env_vars_file(
    emulated_account: EmulatedAccount, container_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`--env-vars`: each function's deployed environment, and the way to the emulator."""
    local = {"AWS_ENDPOINT_URL": container_endpoint, "AWS_MAX_ATTEMPTS": MAX_ATTEMPTS}
    overrides = {
        logical_id: {**variables, **local}
        for logical_id, variables in emulated_account.function_environments().items()
    }
    path = tmp_path_factory.mktemp("local-invoke") / "env-vars.json"
    path.write_text(json.dumps(overrides, indent=2))
    return path


@dataclass
class Invocation:
    result: dict[str, Any]
    log: str  # the container's output: the function's logs, and a traceback on error

    @property
    def error_type(self) -> str | None:
        error = self.result.get("errorType")
        return str(error) if error is not None else None


@dataclass
class LocalInvoke:
    template: Path
    env_vars: Path
    events_dir: Path

    def __call__(self, logical_id: str, event: dict[str, Any]) -> Invocation:
        event_file = self.events_dir / f"{logical_id}-{time.monotonic_ns()}.json"
        event_file.write_text(json.dumps(event))
        command = [
            str(BIN / "sam"),
            "local",
            "invoke",
            logical_id,
            "--template",
            str(self.template),
            "--event",
            str(event_file),
            "--env-vars",
            str(self.env_vars),
            "--skip-pull-image",
            "--region",
            REGION,
        ]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={**os.environ, **FAKE_CREDENTIALS, "SAM_CLI_TELEMETRY": "0"},
            capture_output=True,
            text=True,
            timeout=INVOKE_TIMEOUT_SECONDS,
            check=False,
        )
        assert done.returncode == 0, f"sam local invoke {logical_id} exited {done.returncode}:\n{done.stderr}"
        # SAM CLI writes the function's response (or its error object) to stdout, and the
        # container's log to stderr.
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert isinstance(result, dict), f"{logical_id} returned {result!r}"
        return Invocation(result, done.stderr)


@pytest.fixture(scope="session")
def local_invoke(
    local_template: Path, env_vars_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> LocalInvoke:
    return LocalInvoke(local_template, env_vars_file, tmp_path_factory.mktemp("events"))
