"""Every function's sample event, fed to its handler the way `sam local invoke -e` would.

The handler file and function come from template.yaml's CodeUri and Handler,
the environment from its Globals and the function's own variables with
Parameters at their defaults. The three events chain into one run: Prepare,
Provision, Teardown, and the emulated account is checked after each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import pytest

from scalelab.core.naming import resource_names
from tests.conftest import REPORTS_BUCKET, FakeLambdaContext
from tests.support.account import tagged_resources
from tests.support.events import EVENTS, event_for, invoke, with_emulated_network
from tests.support.template import function_ids

SAMPLE_RUN = "sample-run-0001"


@pytest.mark.parametrize("logical_id", function_ids())
def test_every_function_has_a_sample_event(logical_id: str) -> None:
    assert isinstance(event_for(logical_id), dict)


def test_the_start_execution_example_is_the_prepare_events_input() -> None:
    start = json.loads((EVENTS / "start-execution.json").read_text())

    assert event_for("PrepareRunFunction")["input"] == start


def test_the_provision_event_uses_the_names_prepare_derives() -> None:
    event = event_for("ProvisionLabFunction")

    assert event["run_id"] == SAMPLE_RUN
    assert event["names"] == resource_names(SAMPLE_RUN).model_dump()


def test_the_sample_events_run_a_lab_and_remove_it(
    run_table: Any,
    instance_profile: str,
    load_handler: Callable[[str], ModuleType],
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What sam local invoke sets; Powertools Tracer turns itself off under it.
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    prepare = load_handler("PrepareRunFunction")
    provision = load_handler("ProvisionLabFunction")
    teardown = load_handler("TeardownLabFunction")

    config = invoke(prepare, "PrepareRunFunction", event_for("PrepareRunFunction"), lambda_context)
    assert config["run_id"] == SAMPLE_RUN
    assert run_table.lock_holder("default") == SAMPLE_RUN

    result = invoke(
        provision,
        "ProvisionLabFunction",
        with_emulated_network(event_for("ProvisionLabFunction")),
        lambda_context,
    )
    assert result["load_balancer_dns_name"]
    assert set(tagged_resources(SAMPLE_RUN)) == {
        "security_groups",
        "launch_templates",
        "target_groups",
        "load_balancers",
        "listeners",
        "auto_scaling_groups",
        "instances",
    }

    check = load_handler("CheckTargetsFunction")
    check_event = {**event_for("CheckTargetsFunction"), "target_group_arn": result["target_group_arn"]}
    snapshot = invoke(check, "CheckTargetsFunction", check_event, lambda_context)
    assert snapshot["expectation_met"] is True
    assert snapshot["counts"] == {"healthy": 2}

    boto3.client("s3").create_bucket(Bucket=REPORTS_BUCKET)
    judge = load_handler("JudgeRunFunction")
    verdict = invoke(judge, "JudgeRunFunction", event_for("JudgeRunFunction"), lambda_context)
    assert verdict["passed"] is True
    report = boto3.client("s3").get_object(Bucket=REPORTS_BUCKET, Key=verdict["report"]["key"])
    assert json.loads(report["Body"].read())["verdict"]["reason"] == verdict["reason"]

    outcome = invoke(teardown, "TeardownLabFunction", event_for("TeardownLabFunction"), lambda_context)
    assert outcome == {"done": True, "removed": outcome["removed"], "remaining": [], "refused": []}
    assert len(outcome["removed"]) == 7
    assert tagged_resources(SAMPLE_RUN) == {}
    assert run_table.lock_holder("default") is None
    record = run_table.load_run(SAMPLE_RUN)
    assert record.status == "passed"
    assert record.torn_down_at is not None

    # The sample is the verdict Judge returns for its sample event.
    assert event_for("PublishReportFunction")["verdict"]["report"] == verdict["report"]
    publish = load_handler("PublishReportFunction")
    published = invoke(publish, "PublishReportFunction", event_for("PublishReportFunction"), lambda_context)
    assert published["notification"].startswith("PASSED: scalelab run sample-run-0001 (lab default)\n")
    assert "\nReport (a web page): http" in published["notification"]
    page = boto3.client("s3").get_object(Bucket=REPORTS_BUCKET, Key=verdict["page"]["key"])
    # The ledger after Teardown: the group is listed with when it was removed.
    assert resource_names(SAMPLE_RUN).auto_scaling_group in page["Body"].read().decode()


@pytest.mark.parametrize(
    ("logical_id", "event", "message"),
    [
        ("PrepareRunFunction", {"input": {}}, "execution_name: Field required"),
        ("PrepareRunFunction", {"execution_name": "x", "input": {"lab": {"max_size": 0}}}, "lab.max_size"),
        ("ProvisionLabFunction", {"run_id": "x"}, "invalid Provision event"),
        ("TeardownLabFunction", {"run_id": "Not A Run"}, "run_id: String should match pattern"),
    ],
)
def test_a_bad_event_is_a_named_error_not_a_crash(
    run_table: Any,
    instance_profile: str,
    load_handler: Callable[[str], ModuleType],
    lambda_context: FakeLambdaContext,
    logical_id: str,
    event: dict[str, Any],
    message: str,
) -> None:
    handler = load_handler(logical_id)

    with pytest.raises(Exception, match="invalid") as caught:
        invoke(handler, logical_id, event, lambda_context)

    assert type(caught.value).__name__ == "InvalidInput"
    assert message in str(caught.value)
    assert tagged_resources("x") == {}
