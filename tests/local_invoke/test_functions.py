"""Every function in template.yaml, run by `sam local invoke` in a Lambda-like container
against the emulated account, fed its sample event from events/.

The events chain into one run, the way the state machine would carry it: where a
sample names a live resource (subnets, the target group, the stress command), the
value comes from the previous function's real output. Each result is checked for
its shape and key values, or for the named error the event is meant to produce.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.local_invoke.conftest import ROOT, EmulatedAccount, LocalInvoke

SAMPLE_RUN = "sample-run-0001"
SAMPLE_GROUP = f"scalelab-{SAMPLE_RUN}"
# The emulator's world scales the group out within seconds of the stress starting.
SCALE_OUT_DEADLINE_SECONDS = 60
FUNCTIONS = {
    "PrepareRunFunction",
    "ProvisionLabFunction",
    "CheckTargetsFunction",
    "ProbeAppFunction",
    "StartStressFunction",
    "LoadWorkerFunction",
    "AwaitScaleOutFunction",
    "CheckScaleOutFunction",
    "CheckScaleInFunction",
    "OnScalingEventFunction",
    "StopStressFunction",
    "JudgeRunFunction",
    "TeardownLabFunction",
    "PublishReportFunction",
    "JanitorFunction",
}

pytestmark = pytest.mark.usefixtures("docker_ready")


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((ROOT / "events" / name).read_text())
    return event


@pytest.fixture(scope="module")
def run() -> dict[str, dict[str, Any]]:
    """Each function's result, for the functions after it in the run."""
    return {}


def earlier(run: dict[str, dict[str, Any]], logical_id: str) -> dict[str, Any]:
    if logical_id not in run:
        pytest.fail(f"{logical_id} did not run successfully before this test; see its failure above")
    return run[logical_id]


def test_every_function_in_the_template_is_invoked_here(emulated_account: EmulatedAccount) -> None:
    assert set(emulated_account.function_environments()) == FUNCTIONS


def test_a_bad_event_is_the_named_error(local_invoke: LocalInvoke) -> None:
    invocation = local_invoke("PrepareRunFunction", {"input": {}})

    assert invocation.error_type == "InvalidInput"
    assert "execution_name: Field required" in invocation.result["errorMessage"]


def test_prepare_takes_the_lock_and_resolves_the_default_vpc(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]]
) -> None:
    invocation = local_invoke("PrepareRunFunction", sample("prepare_run.json"))

    config = invocation.result
    assert invocation.error_type is None, invocation.log
    assert config["run_id"] == SAMPLE_RUN
    assert config["names"]["auto_scaling_group"] == SAMPLE_GROUP
    assert config["tags"] == {"scalelab:run": SAMPLE_RUN, "scalelab:lab": "default"}
    assert config["lab"]["vpc_id"].startswith("vpc-")
    assert len(config["lab"]["subnet_ids"]) >= 2
    run["PrepareRunFunction"] = config


def test_provision_creates_the_lab(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    config = earlier(run, "PrepareRunFunction")
    event = sample("provision_lab.json")
    event["lab"] |= {"subnet_ids": config["lab"]["subnet_ids"], "vpc_id": config["lab"]["vpc_id"]}

    invocation = local_invoke("ProvisionLabFunction", event)

    lab = invocation.result
    assert invocation.error_type is None, invocation.log
    assert lab["auto_scaling_group_name"] == SAMPLE_GROUP
    assert lab["launch_template_owned"] is True
    assert lab["load_balancer_dns_name"].endswith(".elb.amazonaws.com")
    groups = emulated_account.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[SAMPLE_GROUP]
    )["AutoScalingGroups"]
    assert [group["TargetGroupARNs"] for group in groups] == [[lab["target_group_arn"]]]
    run["ProvisionLabFunction"] = lab


def test_check_targets_sees_the_groups_instances_healthy(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]]
) -> None:
    lab = earlier(run, "ProvisionLabFunction")
    event = sample("check_targets.json") | {
        "target_group_arn": lab["target_group_arn"],
        "since": lab["provisioned_at"],
    }

    invocation = local_invoke("CheckTargetsFunction", event)

    snapshot = invocation.result
    assert invocation.error_type is None, invocation.log
    assert snapshot["expectation_met"] is True
    assert snapshot["counts"] == {"healthy": 2}
    assert sorted(snapshot["targets"]) == sorted(snapshot["healthy_instances"])


def test_probe_reports_a_load_balancer_it_cannot_reach(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]]
) -> None:
    # The emulated load balancer's DNS name resolves nowhere: the probe's verdict
    # says so, request by request, and it is not an error.
    lab = earlier(run, "ProvisionLabFunction")
    event = sample("probe_app.json") | {"url": f"http://{lab['load_balancer_dns_name']}/home"}

    invocation = local_invoke("ProbeAppFunction", event)

    probe = invocation.result
    assert invocation.error_type is None, invocation.log
    assert probe["passed"] is False
    assert probe["requests"] == 20
    assert probe["status_counts"]["connection_error"] == 20
    assert probe["reason"].startswith("too few 2xx answers: 0/20")


def test_start_stress_sends_the_burn_to_the_groups_instances(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    earlier(run, "ProvisionLabFunction")

    invocation = local_invoke("StartStressFunction", sample("start_stress.json"))

    stress = invocation.result
    assert invocation.error_type is None, invocation.log
    assert stress["duration_seconds"] == 600
    assert len(stress["instance_ids"]) == 2
    commands = emulated_account.client("ssm").list_commands(CommandId=stress["command_id"])["Commands"]
    assert [command["DocumentName"] for command in commands] == ["AWS-RunShellScript"]
    run["StartStressFunction"] = stress


def _scaled_out(emulated_account: EmulatedAccount) -> bool:
    autoscaling = emulated_account.client("autoscaling")
    deadline = time.monotonic() + SCALE_OUT_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[SAMPLE_GROUP])
        if groups["AutoScalingGroups"][0]["DesiredCapacity"] > 2:
            return True
        time.sleep(1)
    return False


def _after_the_scale_out(
    run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount, sample_name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stress's result once the world has scaled the group out, and the sample event with the
    instances the stress was sent to."""
    stress = earlier(run, "StartStressFunction")
    assert _scaled_out(emulated_account), f"the group did not scale out within {SCALE_OUT_DEADLINE_SECONDS} s"
    return stress, sample(sample_name) | {"instances_before": stress["instance_ids"]}


def test_await_scale_out_finds_the_scale_out_and_hands_over_its_token(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    # Given the stress made the emulated world scale the group out (its launch event
    # reached the deployed OnScalingEvent function in the emulator) ...
    _, event = _after_the_scale_out(run, emulated_account, "await_scale_out.json")

    invocation = local_invoke("AwaitScaleOutFunction", event)

    # ... the wait completes at once; the sample's token is not one Step Functions
    # issued, so Step Functions answers that the task is gone: "stale".
    waited = invocation.result
    assert invocation.error_type is None, invocation.log
    assert waited["run_id"] == SAMPLE_RUN
    assert waited["waiting"] is False
    assert waited["outcome"] == "stale"
    assert waited["completed_by"]


def test_check_scale_out_finds_the_launch_in_the_log_and_the_groups_activities(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    stress, event = _after_the_scale_out(run, emulated_account, "check_scale_out.json")

    invocation = local_invoke("CheckScaleOutFunction", event)

    # The same launch is in both: its event (logged by OnScalingEvent) is the one reported.
    found = invocation.result
    assert invocation.error_type is None, invocation.log
    group = emulated_account.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[SAMPLE_GROUP]
    )["AutoScalingGroups"][0]
    launched = {instance["InstanceId"] for instance in group["Instances"]} - set(stress["instance_ids"])
    assert found["instance_id"] in launched
    assert found["seen_in"] == "event"
    assert found["event_id"]


def test_check_scale_in_past_its_deadline_says_how_many_instances_stayed(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    # The emulator's world (its pass scenario) never scales in, and the sample's deadline is long past.
    _after_the_scale_out(run, emulated_account, "check_scale_in.json")

    invocation = local_invoke("CheckScaleInFunction", sample("check_scale_in.json"))

    assert invocation.error_type == "NoScaleIn", invocation.log
    message = invocation.result["errorMessage"]
    assert message.startswith("no scale-in within 1800 s: the group stayed at ")
    assert ", 2 before the scale-out) for " in message


def test_a_load_worker_counts_what_it_could_not_send_and_records_it_on_the_run(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    # The emulated load balancer's DNS name resolves nowhere: every request of the round fails
    # to connect, which the worker measures; it is not an error.
    lab = earlier(run, "ProvisionLabFunction")
    end_at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 120))
    event = sample("load_worker.json") | {
        "url": f"http://{lab['load_balancer_dns_name']}/home",
        "end_at": end_at,
        "round": 7,
    }

    invocation = local_invoke("LoadWorkerFunction", event)

    measured = invocation.result
    assert invocation.error_type is None, invocation.log
    assert measured["requests_ok"] == 0
    assert measured["requests_failed"] >= 1
    assert measured["failures"] == {"connection_error": measured["requests_failed"]}
    table = emulated_account.function_environments()["LoadWorkerFunction"]["TABLE_NAME"]
    item = emulated_account.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"RUN#{SAMPLE_RUN}"}, "sk": {"S": "LOAD#000007#000"}}
    )["Item"]
    assert int(item["requests_failed"]["N"]) == measured["requests_failed"]


def test_a_later_launch_event_finds_the_wait_already_completed(local_invoke: LocalInvoke) -> None:
    invocation = local_invoke("OnScalingEventFunction", sample("on_scaling_event.json"))

    recorded = invocation.result
    assert invocation.error_type is None, invocation.log
    assert recorded["run_id"] == SAMPLE_RUN
    assert recorded["detail_type"] == "EC2 Instance Launch Successful"
    assert recorded["duplicate"] is False
    assert recorded["completion"] == "already_completed"


def test_stop_stress_finds_the_command_already_ended(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]]
) -> None:
    stress = earlier(run, "StartStressFunction")
    event = sample("stop_stress.json") | {"command_id": stress["command_id"]}

    invocation = local_invoke("StopStressFunction", event)

    stopped = invocation.result
    assert invocation.error_type is None, invocation.log
    assert stopped == {
        "command_id": stress["command_id"],
        "cancelled": False,
        "status": "Success",
        "load_execution_arn": None,  # a cpu run has no load execution
    }


def test_judge_passes_the_sample_run_and_stores_its_report(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    invocation = local_invoke("JudgeRunFunction", sample("judge_run.json"))

    verdict = invocation.result
    assert invocation.error_type is None, invocation.log
    assert verdict["passed"] is True
    assert [check["name"] for check in verdict["checks"]] == [
        "healthy",
        "probe",
        "scale_out",
        "new_instance_healthy",
    ]
    stored = emulated_account.client("s3").get_object(
        Bucket=verdict["report"]["bucket"], Key=verdict["report"]["key"]
    )
    assert json.loads(stored["Body"].read())["verdict"]["reason"] == verdict["reason"]
    run["JudgeRunFunction"] = verdict


def test_teardown_removes_everything_the_run_created(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    earlier(run, "ProvisionLabFunction")

    invocation = local_invoke("TeardownLabFunction", sample("teardown_lab.json"))

    outcome = invocation.result
    assert invocation.error_type is None, invocation.log
    assert outcome["done"] is True
    assert (outcome["remaining"], outcome["refused"]) == ([], [])
    assert len(outcome["removed"]) == 7
    groups = emulated_account.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[SAMPLE_GROUP]
    )["AutoScalingGroups"]
    assert groups == []


def test_publish_report_writes_the_page_after_teardown_and_links_it(
    local_invoke: LocalInvoke, run: dict[str, dict[str, Any]], emulated_account: EmulatedAccount
) -> None:
    # The sample's shape, with the verdict Judge returned here (the emulated account's bucket).
    event = sample("publish_report.json") | {"verdict": earlier(run, "JudgeRunFunction")}

    invocation = local_invoke("PublishReportFunction", event)

    published = invocation.result
    assert invocation.error_type is None, invocation.log
    assert published["notification"].startswith(f"PASSED: scalelab run {SAMPLE_RUN} (lab default)\n")
    assert "\nReport (a web page): http" in published["notification"]
    page = emulated_account.client("s3").get_object(
        Bucket=published["page"]["bucket"], Key=published["page"]["key"]
    )
    body = page["Body"].read().decode()
    assert SAMPLE_GROUP in body
    assert "Everything was removed by " in body


def test_the_janitor_finds_nothing_left_to_sweep(local_invoke: LocalInvoke) -> None:
    invocation = local_invoke("JanitorFunction", sample("janitor.json"))

    assert invocation.error_type is None, invocation.log
    assert invocation.result == {"removed": [], "could_not_remove": [], "skipped": [], "locks_released": []}
