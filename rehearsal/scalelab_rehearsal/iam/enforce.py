"""IAM enforced on the emulator: who calls, what AWS would check, and AWS's answer to a denial.

Who calls: each function and each state machine acts with its own role's credentials, as in
AWS. The rehearsal runs functions in-process, so a function's role is its thread's
(``acting_as``, for the handler's duration): every request that thread signs carries the
role's own access key. A state machine's task clients are built with its role's key
(emulator.py). The emulator's WSGI layer maps the key back to the role, asks ``checks`` what
AWS would check, has the evaluator decide, and answers a denial in the service's own error
shape before moto sees the request. A request signed with any other key (the test's own look
at the account, the simulated world) is not a principal's and is not checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.credentials import Credentials
from botocore.signers import RequestSigner
from moto.iam.exceptions import NotFoundException
from moto.iam.models import iam_backends

from scalelab_rehearsal.iam.checks import REST_OPERATIONS, ApiRequest, checks_for
from scalelab_rehearsal.iam.evaluator import Check, Decision, Evaluator, NamedPolicy

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# The services whose requests are Query (form fields, XML answers); the rest that the workflow
# calls are JSON (X-Amz-Target) or REST (lambda, s3).
QUERY_SERVICES = frozenset({"ec2", "autoscaling", "elasticloadbalancing", "iam", "sts", "sns"})


RPC_V2_PATH = re.compile(r"^/service/[^/]+/operation/(?P<operation>[A-Za-z]+)$")

_acting = threading.local()


@dataclass(frozen=True)
class Principal:
    role_arn: str
    role_logical_id: str
    session: str

    @property
    def arn(self) -> str:
        account = self.role_arn.split(":")[4]
        role_name = self.role_arn.rsplit("/", 1)[-1]
        return f"arn:aws:sts::{account}:assumed-role/{role_name}/{self.session}"


@dataclass(frozen=True)
class CheckedCall:
    """One request a principal made, every check AWS makes for it, and how each went."""

    principal: Principal
    api: str  # service:Operation as the SDK named it
    checks: tuple[tuple[Check, Decision], ...]

    @property
    def denied(self) -> tuple[Check, Decision] | None:
        return next(((c, d) for c, d in self.checks if not d.allowed), None)


def iam_summary(calls: list[CheckedCall], deliveries: list[tuple[Check, Decision]]) -> dict[str, Any]:
    """What a rehearsal says of IAM: how many calls and EventBridge deliveries were checked, and
    which were denied."""

    def named(call: CheckedCall) -> str:
        check, decision = call.denied or (None, None)
        assert check is not None
        assert decision is not None
        return f"{call.principal.role_logical_id} {check.action} ({decision.result})"

    return {
        "calls": len(calls),
        "roles": len({call.principal.role_arn for call in calls}),
        "deliveries": len(deliveries),
        "denied": sorted(
            {named(call) for call in calls if call.denied}
            | {f"events.amazonaws.com {c.action} {c.resource}" for c, d in deliveries if not d.allowed}
        ),
    }


def access_key_for(principal: Principal) -> str:
    """A stable, AWS-shaped temporary access key id for the principal's session."""
    digest = hashlib.sha256(f"{principal.role_arn}/{principal.session}".encode()).hexdigest().upper()
    return "ASIA" + digest[:16]


def credentials_of(principal: Principal | None) -> dict[str, str]:
    """A client's keyword arguments for the principal's credentials (none: the caller's own)."""
    if principal is None:
        return {}
    return {
        "aws_access_key_id": access_key_for(principal),
        "aws_secret_access_key": "rehearsal",
        "aws_session_token": "rehearsal",
    }


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Sign every request this thread makes with ``principal``'s credentials meanwhile."""
    saved = getattr(_acting, "principal", None)
    _acting.principal = principal
    try:
        yield
    finally:
        _acting.principal = saved


def _sign_as_the_acting_principal() -> Callable[[], None]:
    original = RequestSigner.get_auth_instance

    def get_auth_instance(self: RequestSigner, *args: Any, **kwargs: Any) -> Any:
        principal: Principal | None = getattr(_acting, "principal", None)
        if principal is not None:
            kwargs["request_credentials"] = Credentials(access_key_for(principal), "rehearsal", "rehearsal")
        return original(self, *args, **kwargs)

    RequestSigner.get_auth_instance = get_auth_instance  # type: ignore[method-assign]
    RequestSigner.get_auth = get_auth_instance

    def undo() -> None:
        RequestSigner.get_auth_instance = original  # type: ignore[method-assign]
        RequestSigner.get_auth = original

    return undo


class Enforcement:
    """The authorizer: principals, their policies as deployed, and the record of every call."""

    def __init__(
        self, account: str, region: str, role_logical_ids: dict[str, str], evaluator: Evaluator
    ) -> None:
        self.account = account
        self.region = region
        # Role name (physical id) -> the template's logical id.
        self.role_logical_ids = role_logical_ids
        self.evaluator = evaluator
        self.calls: list[CheckedCall] = []
        # EventBridge's deliveries to Lambda targets: the function's resource policy decides them.
        self.deliveries: list[tuple[Check, Decision]] = []
        self._principals: dict[str, Principal] = {}
        self._policies: dict[str, list[NamedPolicy]] = {}
        self._decisions: dict[str, Decision] = {}
        self._lock = threading.Lock()
        self._undo = _sign_as_the_acting_principal()

    def principal(self, role_arn: str, session: str) -> Principal:
        role_name = role_arn.rsplit("/", 1)[-1]
        principal = Principal(role_arn, self.role_logical_ids.get(role_name, role_name), session)
        with self._lock:
            self._principals[access_key_for(principal)] = principal
        return principal

    def caller(self, environ: dict[str, Any]) -> Principal | None:
        """The principal whose credentials signed this request, if it is one of the stack's."""
        with self._lock:
            return self._principals.get(_access_key(environ))

    def policies(self, role_arn: str) -> list[NamedPolicy]:
        """The role's inline and managed policies, as CloudFormation created them in the account."""
        with self._lock:
            if role_arn not in self._policies:
                self._policies[role_arn] = _role_policies(self.account, role_arn)
            return self._policies[role_arn]

    def stop_signing(self) -> None:
        """Threads sign with their own credentials again (the evaluator is its owner's to close)."""
        self._undo()

    # ---- the WSGI layer ----------------------------------------------------------------------

    def authorize(
        self, environ: dict[str, Any], start_response: Callable[..., Any], app: WsgiApp
    ) -> Iterable[bytes]:
        """Pass a principal's request on to ``app`` only when its role allows every check."""
        principal = self._principals.get(_access_key(environ))
        if principal is None:
            return app(environ, start_response)
        request = self._parse(environ)
        call = self.check(principal, request)
        if call.denied is None:
            return app(environ, start_response)
        check, decision = call.denied
        return _denial(request.service, principal, check, decision, start_response)

    def check(self, principal: Principal, request: ApiRequest) -> CheckedCall:
        policies = self.policies(principal.role_arn)
        context_base = {
            "aws:PrincipalArn": principal.role_arn,
            "aws:PrincipalAccount": self.account,
            "aws:SecureTransport": "true",
        }
        checks = [_with_context(check, context_base) for check in checks_for(request)]
        decided = tuple((check, self._decide(principal, check, policies)) for check in checks)
        call = CheckedCall(principal, f"{request.service}:{request.operation}", decided)
        with self._lock:
            self.calls.append(call)
        return call

    def _decide(self, principal: Principal, check: Check, policies: list[NamedPolicy]) -> Decision:
        """The evaluator's decision, once per role and distinct check: a run repeats most of its
        checks (the run table, the Describe calls), and a role's policies do not change in a run."""
        key = json.dumps([principal.role_arn, check.action, check.resource, check.context], sort_keys=True)
        with self._lock:
            known = self._decisions.get(key)
        if known is None:
            known = self.evaluator.evaluate(principal.arn, check, policies)
            with self._lock:
                self._decisions[key] = known
        return known

    def allows_delivery(self, source_arn: str, function_arn: str, resource_policy: dict[str, Any]) -> bool:
        """Whether the function's resource policy lets EventBridge (``source_arn``, a rule) invoke it:
        the rule's delivery is authorized by that policy, not by a role."""
        check = Check(
            "lambda:InvokeFunction",
            function_arn,
            {"aws:SourceArn": source_arn, "aws:SourceAccount": self.account},
            resource_policy,
        )
        decision = self.evaluator.evaluate("events.amazonaws.com", check, [])
        with self._lock:
            self.deliveries.append((check, decision))
        return decision.allowed

    def _parse(self, environ: dict[str, Any]) -> ApiRequest:
        service = _signing_service(environ)
        method = environ["REQUEST_METHOD"]
        path = urllib.parse.unquote(environ.get("PATH_INFO", ""))
        for rest_method, rest_service, pattern, operation in REST_OPERATIONS:
            matched = pattern.match(path)
            if service == rest_service and method == rest_method and matched:
                return ApiRequest(service, operation, matched.groupdict(), self.account, self.region)
        body = _read_body(environ)
        rpc_v2 = RPC_V2_PATH.match(path)
        if rpc_v2:
            # The Smithy RPC v2 CBOR protocol (CloudWatch): the operation is in the path. Its CBOR
            # body is not read, so the request names no resource (moto does not serve this protocol).
            return ApiRequest(service, rpc_v2["operation"], {}, self.account, self.region)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return ApiRequest(
                service, target.rsplit(".", 1)[-1], json.loads(body or b"{}"), self.account, self.region
            )
        fields = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        fields.update(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        return ApiRequest(
            service, fields.get("Action", f"{method} {path}"), fields, self.account, self.region
        )


def _with_context(check: Check, base: dict[str, str]) -> Check:
    return Check(check.action, check.resource, {**base, **check.context}, check.resource_policy)


def _role_policies(account: str, role_arn: str) -> list[NamedPolicy]:
    iam = iam_backends[account]["global"]
    try:
        role = iam.get_role_by_arn(role_arn)
    except NotFoundException:
        # The role is gone (the account was reset under a run still going): nothing allows.
        return []
    inline = [{"name": name, "policy": _document(document)} for name, document in role.policies.items()]
    # The managed policies attached in this account (the template's own AWS::IAM::ManagedPolicy);
    # moto's account holds no AWS managed policy, so what those grant (Lambda's and X-Ray's own
    # writes, which the rehearsal does not make) is never allowed here.
    managed = [
        {"name": arn, "policy": _document(next(v.document for v in policy.versions if v.is_default))}
        for arn, policy in role.managed_policies.items()
    ]
    return inline + managed


def _document(document: str | dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(document) if isinstance(document, str) else document
    return parsed


def _credential_scope(environ: dict[str, Any]) -> str:
    """``<access key>/<date>/<region>/<service>/aws4_request`` from the Authorization header, or
    from the query of a pre-signed URL (which acts with its signer's permissions, as in AWS)."""
    authorization: str = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in authorization:
        return authorization.split("Credential=", 1)[1].split(",", 1)[0]
    query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    return str(query.get("X-Amz-Credential", ""))


def _access_key(environ: dict[str, Any]) -> str:
    return _credential_scope(environ).split("/", 1)[0]


def _signing_service(environ: dict[str, Any]) -> str:
    return str(_credential_scope(environ).split("/")[3])


def _read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body: bytes = environ["wsgi.input"].read(length) if length else b""
    # moto reads the body again.
    environ["wsgi.input"] = io.BytesIO(body)
    return body


# ---- denials, as each service answers them ---------------------------------------------------


def denial_message(principal: Principal, check: Check, decision: Decision) -> str:
    resource = check.resource or "*"
    if decision.result == "Invalid":
        return (
            f"User: {principal.arn} is not authorized to perform: {check.action} on resource: {resource} "
            f"because the authorization data does not accept the request ({decision.error})"
        )
    because = (
        "an explicit deny" if decision.result == "ExplicitlyDenied" else "no identity-based policy allows"
    )
    return (
        f"User: {principal.arn} is not authorized to perform: {check.action} on resource: {resource} "
        f"because {because} the {check.action} action"
    )


def _denial(
    service: str, principal: Principal, check: Check, decision: Decision, start_response: Callable[..., Any]
) -> Iterable[bytes]:
    message = denial_message(principal, check, decision)
    request_id = str(uuid.uuid4())
    if service == "ec2":
        body = (
            f"<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>{_xml(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        return _answer(start_response, "403 Forbidden", "text/xml", body.encode())
    if service == "s3":
        body = (
            f"<Error><Code>AccessDenied</Code><Message>{_xml(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        return _answer(start_response, "403 Forbidden", "application/xml", body.encode())
    if service in QUERY_SERVICES:
        # SNS names the same denial AuthorizationError, and a denial on the topic's key
        # KMSAccessDenied, with status 400 (SNS API Reference, Publish).
        code, status = "AccessDenied", "403 Forbidden"
        if service == "sns":
            code = "AuthorizationError"
            if check.action.startswith("kms:"):
                code, status = "KMSAccessDenied", "400 Bad Request"
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{_xml(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return _answer(start_response, status, "text/xml", body.encode())
    if service == "lambda":
        body_json = json.dumps({"Type": "User", "message": message})
        return _answer(
            start_response,
            "403 Forbidden",
            "application/json",
            body_json.encode(),
            [("x-amzn-ErrorType", "AccessDeniedException")],
        )
    body_json = json.dumps({"__type": "AccessDeniedException", "message": message})
    return _answer(start_response, "400 Bad Request", "application/x-amz-json-1.0", body_json.encode())


def _answer(
    start_response: Callable[..., Any],
    status: str,
    content_type: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *(headers or [])],
    )
    return [body]


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
