"""Events that crashed a function, found by tests/contract/test_fuzz_inputs.py: each is now a named rejection.

Before, each of these got past its model and failed later with an error
naming no field (ValueError, OverflowError, a botocore error), some after
resources had been created.
"""

from __future__ import annotations

import pytest

from scalelab.errors import InvalidInput
from scalelab.ledger import RunTable
from scalelab.models import PrepareEvent
from scalelab.prepare import prepare_run


def test_a_run_input_that_is_not_an_object_is_rejected_and_recorded(run_table: RunTable) -> None:
    # Was rejected as a malformed Prepare event, before Prepare could record the run.
    with pytest.raises(InvalidInput, match=r"invalid run input: expected a JSON object, got list"):
        prepare_run(PrepareEvent(execution_name="listed", input=["lab"]), run_table)

    record = run_table.load_run("listed")
    assert record is not None
    assert record.status == "rejected"
    assert run_table.lock_holder("default") is None
