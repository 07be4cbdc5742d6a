"""The lines the suites print at the end of the session, added up over pytest-xdist's workers.

Each worker runs some of the tests and fills its own SUMMARY; tests/conftest.py hands every
worker's to the controller, which adds them up and prints the lines once. A suite that wants a
line of its own adds a field here (with its part in ``merge`` and ``lines``): a hook in a
suite's conftest.py does not run on the controller, which loads only tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultMatrix:
    """tests/reliability: the runs, the faults injected, and every resource a case left."""

    runs: int = 0
    faults: int = 0
    left: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.runs:
            return []
        return [
            f"fault matrix: {self.runs} runs, {self.faults} faults injected, {len(self.left)} resources left",
            *(f"  left: {label}" for label in self.left),
        ]


@dataclass
class Summary:
    fault_matrix: FaultMatrix = field(default_factory=FaultMatrix)
    # tests/workflow/test_iam.py: what the IAM mutation test found.
    iam: list[str] = field(default_factory=list)

    def export(self) -> dict[str, Any]:
        """What a worker sends to the controller (plain data: it crosses a process boundary)."""
        return asdict(self)

    def merge(self, other: dict[str, Any]) -> None:
        self.fault_matrix.runs += other["fault_matrix"]["runs"]
        self.fault_matrix.faults += other["fault_matrix"]["faults"]
        self.fault_matrix.left.extend(other["fault_matrix"]["left"])
        self.iam.extend(other["iam"])

    def lines(self) -> list[str]:
        return [*self.fault_matrix.lines(), *self.iam]


SUMMARY = Summary()
