"""Run Command and task tokens as AWS does them, where moto 5.2.5 differs (used by the
rehearsal and the tests).

- ``SendCommand`` with ``InstanceIds`` and no ``Targets`` sends to every
  instance in the region, because an empty Targets filter matches them all.
- There is no ``CancelCommand``.
- ``SendTaskFailure`` drops its ``cause``.
- A ``waitForTaskToken`` task with ``TimeoutSecondsPath`` waits for its token
  with a timeout read from the wrong value on the interpreter's stack (the
  Lambda's result), so a token that arrives after the wait began fails the
  state with ``States.Runtime``, and so does ``StopExecution`` during the wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.ssm.models import Command
from moto.ssm.responses import SimpleSystemManagerResponse
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_callback as callback_tasks,
)
from moto.stepfunctions.responses import StepFunctionResponse

RUNNING = frozenset({"Pending", "InProgress"})
_instances_from_targets_as_moto_reads_them = Command._get_instance_ids_from_targets


def cancel_command(self: SimpleSystemManagerResponse) -> ActionResult:
    """CancelCommand as AWS answers it: unknown id -> InvalidCommandId; a finished command stays as it is."""
    command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
    if command.status in RUNNING:
        command.status = command.status_details = "Cancelled"
        for invocation in command.invocations:
            invocation["Status"] = invocation["StatusDetails"] = "Cancelled"
    return EmptyResult()


def instances_from_targets(self: Command) -> list[str]:
    """Targets add instances only when there are targets."""
    result: list[str] = _instances_from_targets_as_moto_reads_them(self) if self.targets else []
    return result


def send_task_failure(self: StepFunctionResponse) -> ActionResult:
    """SendTaskFailure with its cause, which the waiting task's Catch sees as ``Cause``."""
    # The interpreter's backend (execute_state_machine on) takes a cause; the plain one does not.
    backend: Any = self.stepfunction_backend
    backend.send_task_failure(
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


_wait_for_token_as_moto_does = callback_tasks.StateTaskServiceCallback._wait_for_task_token_timeout


def wait_for_task_token(
    self: callback_tasks.StateTaskServiceCallback, timeout_seconds: Any, callback_endpoint: Any
) -> Any:
    """Wait for the token; the state's own timeout (TimeoutSecondsPath, evaluated correctly when the
    state starts) still ends the wait, so a timeout that is not a number means no timeout here."""
    if not isinstance(timeout_seconds, int | float):
        timeout_seconds = None
    return _wait_for_token_as_moto_does(self, timeout_seconds, callback_endpoint)


def install() -> Callable[[], None]:
    """Apply the fixes; returns the undo."""
    saved: dict[str, Any] = {
        "cancel": SimpleSystemManagerResponse.__dict__.get("cancel_command"),
        "failure": StepFunctionResponse.send_task_failure,
    }
    SimpleSystemManagerResponse.cancel_command = cancel_command  # type: ignore[attr-defined]
    Command._get_instance_ids_from_targets = instances_from_targets  # type: ignore[method-assign]
    StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]
    callback_tasks.StateTaskServiceCallback._wait_for_task_token_timeout = wait_for_task_token  # type: ignore[method-assign]

    def undo() -> None:
        callback_tasks.StateTaskServiceCallback._wait_for_task_token_timeout = _wait_for_token_as_moto_does  # type: ignore[method-assign]
        StepFunctionResponse.send_task_failure = saved["failure"]  # type: ignore[method-assign]
        Command._get_instance_ids_from_targets = _instances_from_targets_as_moto_reads_them  # type: ignore[method-assign]
        if saved["cancel"] is None:
            del SimpleSystemManagerResponse.cancel_command  # type: ignore[attr-defined]
        else:
            SimpleSystemManagerResponse.cancel_command = saved["cancel"]  # type: ignore[attr-defined]

    return undo
