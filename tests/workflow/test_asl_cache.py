"""The rehearsal's kept parses of state machine definitions (.rehearsal/asl): safe to reuse."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from scalelab_rehearsal import ROOT, asl_cache


def _deployed(name: str) -> str:
    """A definition as CloudFormation hands it to Step Functions: its substitutions made."""

    def value(match: re.Match[str]) -> str:
        return (
            "aws" if match[1] == "Partition" else f"arn:aws:lambda:us-east-1:123456789012:function:{match[1]}"
        )

    return re.sub(r"\$\{(\w+)\}", value, (ROOT / "statemachines" / name).read_text())


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[Path]:
    asl_cache.forget()
    yield tmp_path
    asl_cache.forget()


def _fresh(definition: str) -> bytes:
    return pickle.dumps(AmazonStateLanguageParser.parse(definition)[0])


def test_a_kept_parse_is_what_a_fresh_parse_makes(kept: Path) -> None:
    definition = _deployed("lab.asl.json")
    first = asl_cache.parse(definition, kept)
    asl_cache.forget()  # read back from the file, as the next rehearsal does

    again = asl_cache.parse(definition, kept)

    assert len(list(kept.glob("*.pickle"))) == 1
    assert pickle.dumps(again) == pickle.dumps(first) == _fresh(definition)
    assert again is not first  # each use gets a copy of its own, as from a fresh parse


def test_a_changed_definition_is_parsed_afresh(kept: Path) -> None:
    definition = _deployed("lab.asl.json")
    asl_cache.parse(definition, kept)
    changed = definition.replace('"IntervalSeconds": 2', '"IntervalSeconds": 3', 1)
    assert changed != definition

    parsed = asl_cache.parse(changed, kept)

    assert len(list(kept.glob("*.pickle"))) == 2
    assert pickle.dumps(parsed) == _fresh(changed) != _fresh(definition)


def test_another_moto_or_antlr_version_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = _deployed("cleanup.asl.json")
    before = asl_cache.digest(definition)
    monkeypatch.setattr(asl_cache.importlib.metadata, "version", lambda name: "0.0.0")

    assert asl_cache.digest(definition) != before


@pytest.mark.parametrize("corruption", [b"", b"\x80\x05garbage", pickle.dumps({"not": "a program"})[:-3]])
def test_a_damaged_entry_is_parsed_again_and_replaced(kept: Path, corruption: bytes) -> None:
    definition = _deployed("cleanup.asl.json")
    asl_cache.parse(definition, kept)
    (entry,) = kept.glob("*.pickle")
    entry.write_bytes(corruption)
    asl_cache.forget()

    parsed = asl_cache.parse(definition, kept)

    assert pickle.dumps(parsed) == _fresh(definition)
    assert entry.read_bytes() == _fresh(definition)


def test_a_definition_that_does_not_parse_raises_and_is_not_kept(kept: Path) -> None:
    with pytest.raises(Exception, match="No Resource declaration"):
        asl_cache.parse((ROOT / "statemachines" / "cleanup.asl.json").read_text(), kept)

    assert list(kept.glob("*")) == []
