"""The rehearsal's deploy: the SAM translation it keeps in .rehearsal/translations, and a second
stack beside the first."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import boto3
import pytest
from scalelab_rehearsal import deploy
from scalelab_rehearsal.emulator import Emulator


@pytest.fixture
def packaged(account: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """template.yaml packaged as the rehearsal packages it, with the cache in the test's own folder."""
    monkeypatch.setattr(deploy, "TRANSLATIONS", tmp_path / "translations")
    template = deploy.read_template()
    deploy.package(template, boto3.client("s3"))
    return template


@pytest.mark.parametrize(
    "corruption",
    [b'{"Resources": {"RunTable": ', b"\xff\xfe\x00garbage", b"[]", b"{}"],
    ids=["truncated", "not-utf8", "a-list", "no-resources"],
)
def test_a_kept_translation_that_does_not_parse_is_rebuilt(
    packaged: dict[str, Any], corruption: bytes
) -> None:
    # The translator changes the template it is given: each call gets its own copy, as each deploy does.
    fresh = deploy.translate_once(copy.deepcopy(packaged))
    (kept,) = deploy.TRANSLATIONS.glob("*.json")
    kept.write_bytes(corruption)

    rebuilt = deploy.translate_once(copy.deepcopy(packaged))

    assert rebuilt == fresh
    assert deploy.translate_once(copy.deepcopy(packaged)) == fresh  # read back from the rewritten entry
    assert list(deploy.TRANSLATIONS.glob("*.json")) == [kept]
    assert kept.read_bytes() != corruption


def test_a_second_stack_deploys_beside_the_first_in_the_same_account_and_region() -> None:
    """No resource has a name fixed in the template (the schedules, which moto cannot create, are
    checked on the translated template in tests/contract/test_template.py)."""
    with Emulator() as emulator:
        assert emulator.stack is not None

        second = deploy.deploy(emulator.client, stack_name="scalelab-second")

        kms = emulator.client("kms")
        aliases = {alias["AliasName"] for alias in kms.list_aliases()["Aliases"]}
        assert {"alias/scalelab/reports-topic", "alias/scalelab-second/reports-topic"} <= aliases
        shared = {
            logical_id
            for logical_id, physical in second.resources.items()
            if physical and physical == emulator.stack.resources.get(logical_id)
        }
        assert shared == set()
        stacks = emulator.client("cloudformation").describe_stacks()["Stacks"]
        assert {stack["StackName"]: stack["StackStatus"] for stack in stacks} == {
            "scalelab": "CREATE_COMPLETE",
            "scalelab-second": "CREATE_COMPLETE",
        }
