"""The emulated account: moto's server on 127.0.0.1, its Step Functions interpreter on,
the scalelab stack deployed into it, Lambda and EventBridge wired to the real handlers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from moto.awslambda.utils import get_backend as lambda_backend
from moto.core.config import default_user_config
from moto.events.models import Rule, events_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for as moto_boto_client_for
from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication
from werkzeug.serving import BaseWSGIServer, make_server

from scalelab_rehearsal import asl_cache, moto_fixes
from scalelab_rehearsal.deploy import Stack, deploy
from scalelab_rehearsal.iam.enforce import Enforcement, acting_as, credentials_of
from scalelab_rehearsal.iam.evaluator import Evaluator
from scalelab_rehearsal.runtime import LambdaRuntime, install

REGION = "us-east-1"
ACCOUNT = "123456789012"
# How often an idle server looks for a stop request (werkzeug's default is 0.5 s,
# which every rehearsal would wait out once at its end).
SERVER_POLL_SECONDS = 0.02
MOTO_SEED = 20240601
RESET_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_targets_lock = threading.Lock()
# Target ARNs moto's EventBridge cannot deliver to; the rehearsal delivers to them instead.
_DELIVERED_HERE = (":lambda:", ":states:")


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves each host.

    moto's own answer lists moto's package folder on disk (a ``stat`` of each of its some 170
    folders) and then tries every backend's URL patterns, at each request, twice: 0.13 s of a
    rehearsal's CPU. Which backend serves a host depends on nothing that changes while the process
    runs (moto's installed folders and its URL patterns), so the first answer is kept.
    """

    def __init__(self, create_app: Callable[..., Any]) -> None:
        super().__init__(create_app)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


def _deliver_to_lambda_and_state_machine_targets(emulator: Emulator) -> Callable[[], None]:
    """moto matches EventBridge rules but leaves Lambda and Step Functions targets alone:
    invoke the function or start the state machine, asynchronously, as EventBridge does."""
    original = Rule.send_to_targets

    def send_to_targets(self: Rule, original_event: Any, transform_input: bool = True) -> None:
        ours = [target for target in self.targets if any(kind in target["Arn"] for kind in _DELIVERED_HERE)]
        if len(ours) < len(self.targets):
            with _targets_lock:
                # moto raises for these targets: hand it only the targets it supports.
                all_targets, self.targets = self.targets, [t for t in self.targets if t not in ours]
                try:
                    original(self, original_event, transform_input)
                finally:
                    self.targets = all_targets
        if not ours or not self.event_pattern.matches_event(original_event):
            return
        for target in ours:
            # The put_events caller does not wait for the targets.
            threading.Thread(
                target=_deliver, args=(emulator, self.arn, target, dict(original_event)), daemon=True
            ).start()

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]

    def undo() -> None:
        Rule.send_to_targets = original  # type: ignore[method-assign]

    return undo


def _deliver(emulator: Emulator, rule_arn: str, target: dict[str, Any], event: dict[str, Any]) -> None:
    target_arn = target["Arn"]
    try:
        if ":states:" in target_arn:
            # EventBridge starts the execution with the target's role.
            with acting_as(emulator.iam.principal(target["RoleArn"], "events") if emulator.iam else None):
                emulator.client("stepfunctions").start_execution(
                    stateMachineArn=target_arn, name=str(uuid.uuid4()), input=json.dumps(event, default=str)
                )
            return
        backend = lambda_backend(ACCOUNT, REGION)
        if emulator.iam is not None:
            policy = _as_aws_keeps_it(json.loads(json.loads(backend.get_policy(target_arn))["Policy"]))
            if not emulator.iam.allows_delivery(rule_arn, target_arn, policy):
                # EventBridge counts it as a failed invocation; the function never runs.
                logging.getLogger("scalelab.rehearsal").error(
                    "rule %s may not invoke %s (its resource policy does not allow it)", rule_arn, target_arn
                )
                return
        backend.invoke(
            function_name=target_arn,
            qualifier=None,
            body=json.dumps(event, default=str),
            headers={"x-amz-invocation-type": "Event"},
            response_headers={},
        )
    except Exception:  # a failed delivery is logged, as EventBridge would count it
        logging.getLogger("scalelab.rehearsal").exception("event target %s failed", target_arn)


# The elements of a policy statement; moto keeps AWS::Lambda::Permission's other properties
# (FunctionName) in the statements it makes of them, which AWS does not.
_STATEMENT_ELEMENTS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource", "Condition"})


def _as_aws_keeps_it(policy: dict[str, Any]) -> dict[str, Any]:
    statements = [
        {key: value for key, value in statement.items() if key in _STATEMENT_ELEMENTS}
        for statement in policy["Statement"]
    ]
    return {**policy, "Statement": statements}


def _announce_execution_status_changes(emulator: Emulator) -> Callable[[], None]:
    """Step Functions puts an "Execution Status Change" event on the default bus when an
    execution ends; moto's interpreter does not, so the rehearsal does, in AWS's shape."""
    original = BaseExecutionWorkerCommunication.terminated

    def terminated(self: BaseExecutionWorkerCommunication) -> None:
        original(self)
        with emulator.execution_ended:
            emulator.execution_ended.notify_all()
        execution = self.execution
        if emulator.server is None:
            return
        detail = {
            "executionArn": execution.exec_arn,
            "stateMachineArn": execution.state_machine_arn,
            "name": execution.name,
            "status": str(execution.exec_status.value if execution.exec_status else "UNKNOWN"),
            "startDate": int(execution.start_date.timestamp() * 1000),
            "stopDate": int(execution.stop_date.timestamp() * 1000) if execution.stop_date else None,
            "input": json.dumps(execution.input_data),
            "output": None,
            "error": execution.error,
            "cause": execution.cause,
        }
        try:
            emulator.put_aws_events(
                [
                    {
                        "Source": "aws.states",
                        "DetailType": "Step Functions Execution Status Change",
                        "Detail": json.dumps(detail, default=str),
                        "Resources": [execution.exec_arn],
                    }
                ]
            )
        except Exception:  # the emulator is stopping
            logging.getLogger("scalelab.rehearsal").debug("status change event not put", exc_info=True)

    BaseExecutionWorkerCommunication.terminated = terminated  # type: ignore[method-assign]

    def undo() -> None:
        BaseExecutionWorkerCommunication.terminated = original  # type: ignore[method-assign]

    return undo


def _run_state_machines_as_their_roles(emulator: Emulator) -> Callable[[], None]:
    """An execution's own calls (Lambda invokes, service integrations) carry its state machine's
    role, as in Step Functions: moto's interpreter builds each task's client from the task's
    credentials (the execution role unless the state names another), so that is where the
    role's access key goes in."""
    # Imported for their side effect: every service integration module is loaded, so each one's
    # ``boto_client_for`` can be replaced.
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils  # noqa: PLC0415
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_factory  # noqa: F401, PLC0415

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        principal = emulator.iam.principal(state_credentials.role_arn, "states") if emulator.iam else None
        with acting_as(principal):
            return boto3.session.Session().client(  # type: ignore[call-overload]
                service,
                region_name=region,
                endpoint_url=emulator.endpoint,
                config=Config(
                    parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1}
                ),
                **credentials_of(principal),
            )

    users = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("moto.stepfunctions.parser.")
        and getattr(module, "boto_client_for", None) is moto_boto_client_for
    ]
    for module in users:
        module.boto_client_for = boto_client_for  # type: ignore[attr-defined]

    def undo() -> None:
        for module in users:
            module.boto_client_for = moto_boto_client_for  # type: ignore[attr-defined]

    return undo


class Emulator:
    """Start, deploy, and stop the emulated account; one per process at a time."""

    def __init__(self, parameters: dict[str, str] | None = None, port: int | None = None) -> None:
        # A cleanup pass a second apart; a sweep may touch any run that has ended. A load round
        # of a real second: the template's minute at the world's default speed is a fraction of
        # it, and a stopped load's last worker still runs out its round (rehearse.load_parameters).
        self.parameters = {
            "ScheduleEnabled": "false",
            "CleanupPollSeconds": "1",
            "JanitorGraceSeconds": "0",
            "LoadRoundSeconds": "1",
            **(parameters or {}),
        }
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._session = boto3.session.Session()
        self.stack: Stack | None = None
        self.runtime: LambdaRuntime | None = None
        # IAM, enforced on every call a function or a state machine makes (iam/enforce.py).
        self.iam: Enforcement | None = None
        self._function_names: set[str] = set()
        self._undo: list[Callable[[], None]] = []
        self._saved_environment: dict[str, str | None] = {}
        # Notified whenever an execution ends, so whoever follows one need not poll often.
        self.execution_ended = threading.Condition()

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
        # Node loads the authorization data while the stack deploys.
        evaluator = Evaluator()
        self._undo.append(evaluator.close)
        self._undo.append(self._patch_config())
        self._undo.append(moto_fixes.install())
        self._undo.append(asl_cache.install())
        # moto's ThreadedMotoServer, with a shorter poll so that stopping is immediate.
        self.server = make_server(
            "127.0.0.1",
            self.port,
            self._authorized(_Dispatcher(create_backend_app)),
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
        self.seed()
        self.stack = deploy(self.client, self.parameters)
        self.iam = Enforcement(
            ACCOUNT,
            REGION,
            {physical: logical for logical, physical in self.stack.resources.items()},
            evaluator,
        )
        self._undo.append(self._close_iam)
        self.runtime = LambdaRuntime(self.stack.code_dirs, self._function_principal)
        self._undo.append(_run_state_machines_as_their_roles(self))
        self._undo.append(install(self.runtime))
        self._undo.append(_deliver_to_lambda_and_state_machine_targets(self))
        self._undo.append(_announce_execution_status_changes(self))
        return self

    def reset(self) -> None:
        """Forget every emulated resource (moto's backends are shared by the whole process)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        # Resetting every backend takes a second on an idle machine; a loaded one (tests on both
        # Pythons' workers at once) has taken over 10 s.
        with urllib.request.urlopen(request, timeout=RESET_TIMEOUT_SECONDS):  # noqa: S310 - the emulator on loopback
            pass

    def seed(self) -> None:
        """Start moto's random ids over (moto's documented seed), so that every rehearsal's stack gets
        the same physical names, and so the same state machine definitions, whose ARNs are substituted
        in: a definition parsed once (``asl_cache``) then serves every later rehearsal."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/seed?a={MOTO_SEED}", method="POST")  # noqa: S310 - loopback
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
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )

    def put_aws_events(self, entries: list[dict[str, Any]]) -> None:
        """Put events as an AWS service puts them (Auto Scaling, Step Functions): on the bus itself,
        not through PutEvents, which refuses ``aws.*`` sources from callers as AWS does."""
        refused = [
            answer for answer in events_backends[ACCOUNT][REGION].put_events(entries) if "ErrorCode" in answer
        ]
        if refused:
            raise RuntimeError(f"the emulated event bus refused an AWS service's event: {refused}")

    @property
    def state_machine_arn(self) -> str:
        if self.stack is None:
            raise RuntimeError("start the emulator first")
        return self.stack.outputs["StateMachineArn"]

    # ---- internals ---------------------------------------------------------------------------

    def _authorized(self, app: Any) -> Any:
        """The server's application: IAM first, once the stack (and so its roles) exists."""

        def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if self.iam is None:
                return app(environ, start_response)
            return self.iam.authorize(environ, start_response, app)

        return application

    def is_function_call(self, environ: dict[str, Any]) -> bool:
        """Whether one of the stack's Lambda functions made this request (signed with its role)."""
        principal = self.iam.caller(environ) if self.iam is not None else None
        return principal is not None and principal.session in self._function_names

    def _function_principal(self, fn: Any) -> Any:
        self._function_names.add(fn.function_name)
        return self.iam.principal(fn.role, fn.function_name) if self.iam else None

    def _close_iam(self) -> None:
        if self.iam is not None:
            self.iam.stop_signing()
            self.iam = None

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
