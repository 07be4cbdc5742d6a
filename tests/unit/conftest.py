"""Fixtures for the layer's unit tests: a prepared run and provisioning settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from scalelab.contracts.provision import ProvisionResult
from scalelab.contracts.run import PrepareEvent, RunConfig
from scalelab.core.settings import ProvisionSettings, RunDefaults
from scalelab.steps.prepare import prepare_run
from scalelab.steps.provision import provision_lab
from scalelab.store.runs import RunTable
from tests.conftest import apply_function_environment

PrepareRun = Callable[..., RunConfig]


@pytest.fixture
def prepare(run_table: RunTable, run_defaults: RunDefaults) -> PrepareRun:
    """Run Prepare for an execution name and input, as the state machine would."""

    def run(execution_name: str = "run-0001", run_input: dict[str, Any] | None = None) -> RunConfig:
        event = PrepareEvent(execution_name=execution_name, input=run_input or {})
        return prepare_run(event, run_table, run_defaults)

    return run


@pytest.fixture
def provision_settings(instance_profile: str, monkeypatch: pytest.MonkeyPatch) -> ProvisionSettings:
    environment = apply_function_environment(monkeypatch, "ProvisionLabFunction")
    assert environment["INSTANCE_PROFILE_ARN"] == instance_profile
    return ProvisionSettings.from_env()


@pytest.fixture
def config(prepare: PrepareRun, request: pytest.FixtureRequest) -> RunConfig:
    """The prepared run named by the test module's ``RUN``."""
    return prepare(request.module.RUN)


@pytest.fixture
def lab(config: RunConfig, provision_settings: ProvisionSettings, run_table: RunTable) -> ProvisionResult:
    """That run's lab, provisioned in the emulated account."""
    return provision_lab(config, provision_settings, run_table)
