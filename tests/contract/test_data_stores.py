"""The run table, the reports bucket and the reports topic keep their data and are reachable only as intended.

Read from the template CloudFormation receives (after the SAM transform).
"""

from __future__ import annotations

from typing import Any

from tests.support.iam import render, transformed_template


def _resource(logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = transformed_template()["Resources"][logical_id]
    return found


def _bucket_policy_statements(bucket: str) -> list[dict[str, Any]]:
    return [
        statement
        for spec in transformed_template()["Resources"].values()
        if spec["Type"] == "AWS::S3::BucketPolicy" and spec["Properties"]["Bucket"] == {"Ref": bucket}
        for statement in spec["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_the_run_table_survives_a_deleted_or_replaced_stack() -> None:
    table = _resource("RunTable")

    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_the_run_table_has_point_in_time_recovery() -> None:
    properties = _resource("RunTable")["Properties"]

    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_the_run_table_is_encrypted_and_shared_with_no_one() -> None:
    properties = _resource("RunTable")["Properties"]

    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert "ResourcePolicy" not in properties


def test_the_reports_bucket_survives_a_deleted_or_replaced_stack() -> None:
    bucket = _resource("ReportsBucket")

    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_the_reports_bucket_keeps_overwritten_and_deleted_reports_as_versions() -> None:
    properties = _resource("ReportsBucket")["Properties"]

    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}


def test_the_reports_bucket_blocks_every_kind_of_public_access() -> None:
    properties = _resource("ReportsBucket")["Properties"]

    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert all(statement["Effect"] == "Deny" for statement in _bucket_policy_statements("ReportsBucket"))


def test_the_reports_bucket_refuses_every_request_without_tls() -> None:
    deny_plain_http = [
        statement
        for statement in _bucket_policy_statements("ReportsBucket")
        if statement["Effect"] == "Deny"
        and statement["Principal"] == "*"
        and statement["Action"] == "s3:*"
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]

    assert deny_plain_http
    assert {render(resource) for resource in deny_plain_http[0]["Resource"]} == {
        "<ReportsBucket.Arn>",
        "<ReportsBucket.Arn>/*",
    }


def _key_statements() -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = _resource("ReportsTopicKey")["Properties"]["KeyPolicy"]["Statement"]
    return statements


def test_the_reports_topic_is_encrypted_with_the_stacks_own_rotating_key() -> None:
    """The AWS managed key (alias/aws/sns) cannot admit CloudWatch: the alarm could not publish."""
    topic = _resource("ReportsTopic")["Properties"]
    alias = _resource("ReportsTopicKeyAlias")["Properties"]

    assert topic["KmsMasterKeyId"] == {"Ref": "ReportsTopicKeyAlias"}
    assert alias["TargetKeyId"] == {"Ref": "ReportsTopicKey"}
    assert render(alias["AliasName"]) == "alias/<AWS::StackName>/reports-topic"
    assert _resource("ReportsTopicKey")["Properties"]["EnableKeyRotation"] is True


def test_the_topic_key_admits_cloudwatch_only_for_this_stacks_alarms() -> None:
    admitted = [s for s in _key_statements() if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]

    assert len(admitted) == 1
    assert sorted(admitted[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    condition = admitted[0]["Condition"]
    assert render(condition["StringEquals"]["aws:SourceAccount"]) == "<account>"
    pattern = render(condition["ArnLike"]["aws:SourceArn"])
    assert pattern == "arn:aws:cloudwatch:<region>:<account>:alarm:<AWS::StackName>-*"
    # CloudFormation names the alarm "<stack>-FailedRunsAlarm-<suffix>", which the pattern matches.
    alarm = _resource("FailedRunsAlarm")["Properties"]
    assert "AlarmName" not in alarm
    assert alarm["AlarmActions"] == [{"Ref": "ReportsTopic"}]


def test_the_topic_key_admits_no_one_else_but_the_account_through_iam() -> None:
    others = [
        s["Principal"] for s in _key_statements() if s["Principal"] != {"Service": "cloudwatch.amazonaws.com"}
    ]

    assert [render(principal["AWS"]) for principal in others] == ["arn:aws:iam::<account>:root"]
