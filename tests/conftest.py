"""Fixtures shared by every test: a sealed AWS environment, moto, the run table, handlers."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from scalelab_rehearsal import moto_fixes

from tests.support.summary import SUMMARY
from tests.support.template import function_code, function_environment, resource, template

# Powertools reads its service name and metrics namespace when the Logger and
# Metrics singletons are created, at the first import of scalelab.core.observability,
# so they are set for the whole session, from the template's Globals, first.
for _name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
    os.environ[_name] = template()["Globals"]["Function"]["Environment"]["Variables"][_name]

from scalelab.core import aws  # noqa: E402
from scalelab.core.observability import metrics  # noqa: E402
from scalelab.core.settings import RunDefaults, TableSettings  # noqa: E402
from scalelab.store.runs import RunTable  # noqa: E402

REGION = "us-east-1"
TABLE_NAME = "scalelab-test-runs"
REPORTS_BUCKET = "scalelab-test-reports"
INSTANCE_PROFILE_NAME = "scalelab-test-instances"

# ---- pytest-xdist's workers (docs/performance.md, "Test suite") -----------------------------

# A fixture of these scopes is made once per worker that runs a test using it.
_SHARED_SCOPES = {"class": pytest.Class, "module": pytest.Module, "package": pytest.Package}


def _shared_fixtures(item: pytest.Item) -> list[str]:
    """The class, module and package fixtures a test uses, each named with the node it is made for."""
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return []
    keys = []
    for name, definitions in fixture_info.name2fixturedefs.items():
        kind = _SHARED_SCOPES.get(definitions[-1].scope)
        node = item.getparent(kind) if kind is not None else None
        if node is not None:
            keys.append(f"{node.nodeid}::{name}")
    return keys


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that share a class, module or package fixture (a module's recorded runs, say) go to
    one worker together, so the fixture is made once, as without workers; every other test goes
    to whichever worker is free. With ``--dist loadgroup`` (the Makefile's) xdist keeps each
    group on one worker; without it the marks do nothing."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    # Union-find over the shared fixtures: tests that share any one are a group.
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared = {index: keys for index, item in enumerate(items) if (keys := _shared_fixtures(item))}
    for keys in shared.values():
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    for index, keys in shared.items():
        items[index].add_marker(pytest.mark.xdist_group(root(keys[0])))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a worker: hand its summary to the controller (pytest_testnodedown)."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["summary"] = SUMMARY.export()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    summary = getattr(node, "workeroutput", {}).get("summary")
    if summary is not None:
        SUMMARY.merge(summary)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY.lines():
        terminalreporter.write_line(line)


_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or host in {"127.0.0.1", "::1", "localhost"}:
        return _real_connect(self, address)
    raise ConnectionRefusedError(f"tests may only reach loopback, not {host!r}")


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _sealed_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and no endpoint: nothing here can reach a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    aws.reset_clients()
    metrics.clear_metrics()
    yield
    aws.reset_clients()
    metrics.clear_metrics()


@pytest.fixture
def account() -> Iterator[None]:
    """A fresh emulated AWS account: moto, in-process, with the rehearsal's fixes where moto
    differs from AWS (scalelab_rehearsal.moto_fixes), as the rehearsal runs it."""
    undo = moto_fixes.install()
    try:
        with mock_aws():
            yield
    finally:
        undo()


LOAD_STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:123456789012:stateMachine:scalelab-LoadStateMachine-TEST"


def physical_ids() -> dict[str, str]:
    """What CloudFormation would give the functions for the template's own resources."""
    return {
        "RunTable": TABLE_NAME,
        "ReportsBucket": REPORTS_BUCKET,
        "ScalelabLayer": f"arn:aws:lambda:{REGION}:123456789012:layer:scalelab:1",
        "InstanceProfile.Arn": f"arn:aws:iam::123456789012:instance-profile/{INSTANCE_PROFILE_NAME}",
        # Ref of a state machine is its ARN.
        "LabStateMachine": f"arn:aws:states:{REGION}:123456789012:stateMachine:scalelab-LabStateMachine-TEST",
        "LoadStateMachine": LOAD_STATE_MACHINE_ARN,
    }


def apply_function_environment(
    monkeypatch: pytest.MonkeyPatch, logical_id: str, overrides: dict[str, Any] | None = None
) -> dict[str, str]:
    environment = function_environment(logical_id, physical_ids(), overrides)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def run_table(account: None, monkeypatch: pytest.MonkeyPatch) -> RunTable:
    """The run table, created from template.yaml's own definition of it."""
    properties = resource("RunTable")["Properties"]
    boto3.client("dynamodb").create_table(
        TableName=TABLE_NAME,
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
        BillingMode=properties["BillingMode"],
    )
    apply_function_environment(monkeypatch, "PrepareRunFunction")
    return RunTable(TableSettings.from_env())


@pytest.fixture
def run_defaults(run_table: RunTable) -> RunDefaults:
    """The Prepare function's defaults and limits, as its environment gives them."""
    return RunDefaults.from_env()


@pytest.fixture
def instance_profile(account: None) -> str:
    iam = boto3.client("iam")
    iam.create_role(RoleName=INSTANCE_PROFILE_NAME, AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE_NAME)
    iam.add_role_to_instance_profile(
        InstanceProfileName=INSTANCE_PROFILE_NAME, RoleName=INSTANCE_PROFILE_NAME
    )
    arn: str = profile["InstanceProfile"]["Arn"]
    return arn


@dataclass
class FakeLambdaContext:
    function_name: str = "scalelab-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:scalelab-test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext(aws_request_id=str(uuid.uuid4()))


@pytest.fixture
def load_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """Import a function's handler module the way Lambda would: its CodeUri, its environment.

    Every function's file is called app.py, so each is imported under its own
    name and removed again afterwards.
    """
    loaded: list[str] = []

    def load(logical_id: str) -> ModuleType:
        apply_function_environment(monkeypatch, logical_id)
        path, _module, _function = function_code(logical_id)
        name = f"handler_{logical_id}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
