"""The workflow tests: the real state machine and handlers, on the emulated account, per scenario."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from scalelab_rehearsal import cli, rehearse
from scalelab_rehearsal.emulator import Emulator
from scalelab_rehearsal.rehearse import Outcome, collect, merged_input, start_execution, wait_for
from scalelab_rehearsal.world import DEFAULT_SPEED, World, scenario_named

from tests.support.summary import SUMMARY

# What the IAM mutation test found, printed at the end of the run (tests/support/summary.py).
IAM_LINES = SUMMARY.iam


# Every execution in these tests ends well within this (the longest scenario takes ~15 s).
EXECUTION_DEADLINE_SECONDS = 90.0


@dataclass
class Rehearsal:
    emulator: Emulator
    world: World

    def run(self, run_input: Any = None, name: str | None = None) -> Outcome:
        started = time.monotonic()
        arn = start_execution(
            self.emulator,
            merged_input(run_input, scenario=self.world.run_input)
            if run_input is None or isinstance(run_input, dict)
            else run_input,
            name,
        )
        description = wait_for(self.emulator, arn, EXECUTION_DEADLINE_SECONDS)
        # The tests' own look at the account is not part of the run: no injected faults.
        self.world.inject_api_faults = False
        return collect(self.emulator, arn, description, started)

    def start(self, run_input: Any, name: str) -> str:
        return start_execution(self.emulator, run_input, name)

    def finish(self, arn: str) -> Outcome:
        description = wait_for(self.emulator, arn, EXECUTION_DEADLINE_SECONDS)
        self.world.inject_api_faults = False
        return collect(self.emulator, arn, description, time.monotonic())

    @property
    def table(self) -> str:
        assert self.emulator.stack is not None
        return self.emulator.stack.outputs["RunTableName"]

    def run_items(self, run_id: str) -> list[dict[str, Any]]:
        pages = (
            boto3.client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}},
                ConsistentRead=True,
            )
        )
        return [item for page in pages for item in page["Items"]]

    def logged_event_types(self, run_id: str) -> list[str]:
        return sorted(
            item["detail_type"]["S"]
            for item in self.run_items(run_id)
            if item["sk"]["S"].startswith("EVENT#")
        )

    def run_record(self, run_id: str) -> dict[str, Any]:
        return next(item for item in self.run_items(run_id) if item["sk"]["S"] == "RUN")

    def lock_holder(self, lab: str = "default") -> str | None:
        item = boto3.client("dynamodb").get_item(
            TableName=self.table, Key={"pk": {"S": f"LAB#{lab}"}, "sk": {"S": "LOCK"}}, ConsistentRead=True
        )
        holder: str | None = item.get("Item", {}).get("run_id", {}).get("S")
        return holder


@pytest.fixture(autouse=True)
def _rehearsal_output_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports and logs go to the test's own folder, not the checkout's .rehearsal/: tests that
    run at once (pytest-xdist's workers, 3.13 beside 3.11) may use the same run id."""
    monkeypatch.setattr(rehearse, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(cli, "LOGS_DIR", tmp_path / "logs")


def rehearsal_for(scenario: str) -> Iterator[Rehearsal]:
    with Emulator() as emulator, World(emulator, scenario_named(scenario), DEFAULT_SPEED) as world:
        yield Rehearsal(emulator, world)


@pytest.fixture
def rehearsal(request: pytest.FixtureRequest) -> Iterator[Rehearsal]:
    """An emulated account with the stack deployed and the world of the test's scenario (default: pass)."""
    marker = request.node.get_closest_marker("scenario")
    yield from rehearsal_for(marker.args[0] if marker else "pass")
