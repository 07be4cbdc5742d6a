"""The emulated account: moto's server on 127.0.0.1, its Step Functions interpreter on,
the scalelab stack deployed into it, Lambda and EventBridge wired to the real handlers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import urllib.request
from collections.abc import Callable
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from moto.awslambda.utils import get_backend as lambda_backend
from moto.core.config import default_user_config
from moto.events.models import Rule
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from scalelab_rehearsal import moto_fixes
from scalelab_rehearsal.deploy import Stack, deploy
from scalelab_rehearsal.runtime import LambdaRuntime, install

REGION = "us-east-1"
ACCOUNT = "123456789012"
# Requests from the rehearsal's own clients carry this, so injected API faults spare them.
REHEARSAL_AGENT = "scalelab-rehearsal"
# How often an idle server looks for a stop request (werkzeug's default is 0.5 s,
# which every rehearsal would wait out once at its end).
SERVER_POLL_SECONDS = 0.02


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_targets_lock = threading.Lock()


def _deliver_to_lambda_targets() -> Callable[[], None]:
    """moto matches EventBridge rules but leaves Lambda targets alone: invoke them, asynchronously."""
    original = Rule.send_to_targets

    def send_to_targets(self: Rule, original_event: Any, transform_input: bool = True) -> None:
        lambda_targets = [target for target in self.targets if ":lambda:" in target["Arn"]]
        if len(lambda_targets) < len(self.targets):
            with _targets_lock:
                # moto raises for a Lambda target: hand it only the targets it supports.
                all_targets, self.targets = self.targets, [t for t in self.targets if t not in lambda_targets]
                try:
                    original(self, original_event, transform_input)
                finally:
                    self.targets = all_targets
        if not lambda_targets or not self.event_pattern.matches_event(original_event):
            return
        for target in lambda_targets:
            # EventBridge invokes Lambda asynchronously: the put_events caller does not wait.
            threading.Thread(
                target=_invoke_event_target, args=(target["Arn"], dict(original_event)), daemon=True
            ).start()

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]

    def undo() -> None:
        Rule.send_to_targets = original  # type: ignore[method-assign]

    return undo


def _invoke_event_target(function_arn: str, event: dict[str, Any]) -> None:
    try:
        lambda_backend(ACCOUNT, REGION).invoke(
            function_name=function_arn,
            qualifier=None,
            body=json.dumps(event, default=str),
            headers={"x-amz-invocation-type": "Event"},
            response_headers={},
        )
    except Exception:  # an asynchronous invocation's failure is logged, as in Lambda
        logging.getLogger("scalelab.rehearsal").exception("event target %s failed", function_arn)


class Emulator:
    """Start, deploy, and stop the emulated account; one per process at a time."""

    def __init__(self, parameters: dict[str, str] | None = None, port: int | None = None) -> None:
        self.parameters = {"ScheduleEnabled": "false", **(parameters or {})}
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._session = boto3.session.Session()
        self.stack: Stack | None = None
        self.runtime: LambdaRuntime | None = None
        self._undo: list[Callable[[], None]] = []
        self._saved_environment: dict[str, str | None] = {}

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> Emulator:
        self._set_environment(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint,
                # Where moto's Step Functions interpreter sends its Lambda calls.
                "MOTO_PORT": str(self.port),
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        self._undo.append(self._patch_config())
        self._undo.append(moto_fixes.install())
        # moto's ThreadedMotoServer, with a shorter poll so that stopping is immediate.
        self.server = make_server(
            "127.0.0.1",
            self.port,
            DomainDispatcherApplication(create_backend_app),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._server_thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": SERVER_POLL_SECONDS},
            name="moto-server",
            daemon=True,
        )
        self._server_thread.start()
        self.reset()
        self.stack = deploy(self.client, self.parameters)
        self.runtime = LambdaRuntime(self.stack.code_dirs)
        self._undo.append(install(self.runtime))
        self._undo.append(_deliver_to_lambda_targets())
        return self

    def reset(self) -> None:
        """Forget every emulated resource (moto's backends are shared by the whole process)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the emulator on loopback
            pass

    def stop(self) -> None:
        if self.server is not None:
            self.reset()
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._server_thread is not None:
            self._server_thread.join()
            self._server_thread = None
        while self._undo:
            self._undo.pop()()
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = {}
        self.client.cache_clear()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- access --------------------------------------------------------------------------

    @cache  # noqa: B019 - one client per service for the emulator's lifetime
    def client(self, service: str) -> Any:
        return self._session.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            config=Config(user_agent_extra=REHEARSAL_AGENT, retries={"mode": "standard", "max_attempts": 5}),
        )

    @property
    def state_machine_arn(self) -> str:
        if self.stack is None:
            raise RuntimeError("start the emulator first")
        return self.stack.outputs["StateMachineArn"]

    # ---- internals ---------------------------------------------------------------------------

    def _set_environment(self, variables: dict[str, str]) -> None:
        for name, value in variables.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    @staticmethod
    def _patch_config() -> Callable[[], None]:
        """Switch on moto's Step Functions interpreter (off, executions never run)."""
        saved = default_user_config["stepfunctions"]
        default_user_config["stepfunctions"] = {**saved, "execute_state_machine": True}

        def undo() -> None:
            default_user_config["stepfunctions"] = saved

        return undo
