"""Lambda, in-process: moto's Lambda backend runs the real handler instead of a container.

Each function is imported once, like a cold start, with its deployed
environment applied while its module loads (settings are read then), and
called with a Lambda-like context. An exception becomes Lambda's error shape
(``errorType``, ``errorMessage``, ``stackTrace``), which is what Step Functions
matches in Retry and Catch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from moto.awslambda.models import LambdaFunction

from scalelab_rehearsal import ROOT
from scalelab_rehearsal.iam.enforce import Principal, acting_as

LAYER_PATH = ROOT / "layers" / "scalelab"


@dataclass
class LambdaContext:
    """What a handler sees of Lambda's context object."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    _deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LambdaTimedOut(Exception):
    """A fault: the function runs, then Lambda reports it timed out (as when it is stopped at its
    deadline after doing part or all of its work): Step Functions sees ``Sandbox.Timedout``."""


@dataclass
class Invocation:
    function: str
    ok: bool
    error_type: str | None
    seconds: float


class LambdaRuntime:
    """Maps deployed functions to handler files and runs them."""

    def __init__(
        self,
        code_dirs: dict[str, Path],
        principal_for: Callable[[LambdaFunction], Principal | None] = lambda _fn: None,
    ) -> None:
        # Deployed (physical) function name -> the folder of its code.
        self.code_dirs = code_dirs
        # Whose credentials a function's AWS calls carry: its execution role's.
        self.principal_for = principal_for
        self.modules: dict[str, ModuleType] = {}
        self.invocations: list[Invocation] = []
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.faults: Callable[[str, Any], Exception | None] = lambda _name, _event: None
        self._import_lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Invocations still running (a stopped execution does not stop its running Lambda)."""
        with self._record_lock:
            return self._in_flight

    def code_dir(self, function_name: str) -> Path:
        if function_name not in self.code_dirs:
            raise LookupError(f"no code folder known for the deployed function {function_name}")
        return self.code_dirs[function_name]

    def handler_for(self, fn: LambdaFunction) -> Callable[[Any, Any], Any]:
        module_name, handler_name = str(fn.handler).rsplit(".", 1)
        key = f"{fn.function_name}:{module_name}"
        with self._import_lock:
            if key not in self.modules:
                code_dir = self.code_dir(fn.function_name)
                environment = {**lambda_environment(fn, code_dir), **(fn.environment_vars or {})}
                self.modules[key] = _cold_start(key, code_dir / f"{module_name}.py", environment)
        handler: Callable[[Any, Any], Any] = getattr(self.modules[key], handler_name)
        return handler

    def invoke(self, fn: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        """moto's ``_invoke_lambda`` contract: (payload, errored, logs)."""
        started = time.monotonic()
        context = LambdaContext(
            function_name=fn.function_name,
            invoked_function_arn=fn.function_arn,
            memory_limit_in_mb=int(fn.memory_size or 128),
            timeout_seconds=int(fn.timeout or 3),
        )
        with self._record_lock:
            self._in_flight += 1
        try:
            for listener in self.listeners:
                listener(fn.function_name, event)
            with acting_as(self.principal_for(fn)):
                return self._run(fn, event, context, started)
        finally:
            with self._record_lock:
                self._in_flight -= 1

    def _run(
        self, fn: LambdaFunction, event: Any, context: LambdaContext, started: float
    ) -> tuple[str, bool, str]:
        try:
            fault = self.faults(fn.function_name, event)
            if isinstance(fault, LambdaTimedOut):
                with contextlib.suppress(Exception):
                    self.handler_for(fn)(event, context)
                self._record(fn.function_name, False, "Sandbox.Timedout", started)
                return json.dumps(_timeout_payload(context)), True, ""
            if fault is not None:
                raise fault
            result = self.handler_for(fn)(event, context)
        except Exception as exc:  # Lambda turns any exception into a function error
            self._record(fn.function_name, False, type(exc).__name__, started)
            return json.dumps(_error_payload(exc)), True, ""
        self._record(fn.function_name, True, None, started)
        return json.dumps(result), False, ""

    def _record(self, function: str, ok: bool, error_type: str | None, started: float) -> None:
        with self._record_lock:
            self.invocations.append(Invocation(function, ok, error_type, time.monotonic() - started))


def lambda_environment(fn: LambdaFunction, code_dir: Path) -> dict[str, str]:
    """The variables Lambda itself sets in a function's environment. Libraries read them:
    the X-Ray SDK, for one, samples locally in Lambda instead of building a client for
    the X-Ray daemon's sampling API."""
    return {
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
        "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size or 128),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "_HANDLER": str(fn.handler),
    }


def _timeout_payload(context: LambdaContext) -> dict[str, Any]:
    return {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {context.aws_request_id} Error: Task timed out after "
        f"{context.timeout_seconds:.2f} seconds",
    }


def _error_payload(exc: BaseException) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cold_start(key: str, path: Path, environment: dict[str, str]) -> ModuleType:
    """Import a handler file under its own module name with its function's environment."""
    if str(LAYER_PATH) not in sys.path:
        sys.path.insert(0, str(LAYER_PATH))
    name = "rehearsed_" + "".join(ch if ch.isalnum() else "_" for ch in key)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    with _environment({name: str(value) for name, value in environment.items()}):
        spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def install(runtime: LambdaRuntime) -> Callable[[], None]:
    """Route moto's Lambda invocations to ``runtime``; returns the undo."""
    original = LambdaFunction._invoke_lambda

    def invoke_in_process(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        return runtime.invoke(self, event)

    LambdaFunction._invoke_lambda = invoke_in_process  # type: ignore[method-assign]

    def undo() -> None:
        LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]

    return undo
