"""API faults: a scenario's share of the handlers' AWS calls answers throttling or a server error.

Each fault is in the error format of the service that was called. Only the
Lambda functions' calls are faulted (each signs with its own role's key, as in
AWS): the state machines', the rehearsal's, a person's and moto's own API are
spared. The draws come from a seeded random, so a run is reproducible.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from scalelab_rehearsal.world.scenarios import Scenario


class ApiFaults:
    """The faults injected into the emulator's answers, at the scenario's ``api_fault_rate``."""

    def __init__(
        self, scenario: Scenario, seed: int, is_function_call: Callable[[dict[str, Any]], bool]
    ) -> None:
        self.scenario = scenario
        self.is_function_call = is_function_call
        self.random = random.Random(seed)  # noqa: S311 - reproducible faults, not secrets
        self.injected = 0
        # The handlers' calls get faults while this is on; whoever inspects the account
        # after the run turns it off.
        self.enabled = True

    def install(self) -> Callable[[], None]:
        """Put the scenario's faults, if any, between moto's server and its backends; returns the undo."""
        if not self.scenario.api_fault_rate:
            return lambda: None
        original = DomainDispatcherApplication.__call__
        faults = self

        def call(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Any) -> Any:
            faulted = faults.enabled and faults.is_function_call(environ)
            if faulted and faults.random.random() < faults.scenario.api_fault_rate:
                faults.injected += 1
                status, content_type, body = _fault_response(environ, faults.random.random() < 0.5)
                start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
                return [body]
            return original(self, environ, start_response)

        DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign]

        def undo() -> None:
            DomainDispatcherApplication.__call__ = original  # type: ignore[method-assign]

        return undo


def _fault_response(environ: dict[str, Any], throttle: bool) -> tuple[str, str, bytes]:
    """Throttling or an internal error, in the error format of the service that was called."""
    credential = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    service = credential.group(1) if credential else ""
    status = "400 Bad Request" if throttle else "500 Internal Server Error"
    if environ.get("HTTP_X_AMZ_TARGET"):  # JSON protocol: DynamoDB, Step Functions, SSM, ...
        code = "ThrottlingException" if throttle else "InternalServerError"
        return status, "application/x-amz-json-1.0", json.dumps({"__type": code, "message": code}).encode()
    if service == "ec2":
        code = "RequestLimitExceeded" if throttle else "InternalError"
        xml = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{code}</Message></Error></Errors>"
            "<RequestID>fault</RequestID></Response>"
        )
    elif service == "s3":
        code = "SlowDown" if throttle else "InternalError"
        status = "503 Slow Down" if throttle else status
        xml = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
    else:  # query protocol: Auto Scaling, ELBv2, SNS, ...
        code = "Throttling" if throttle else "InternalFailure"
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{code}</Message></Error>"
            "<RequestId>fault</RequestId></ErrorResponse>"
        )
    return status, "text/xml", xml.encode()
