"""The diagnosis of a failed run: what AWS said about the part that failed, as findings a person reads."""

from __future__ import annotations

from pydantic import Field

from scalelab.contracts.base import OutputModel

# Bounds that keep a diagnosis readable and within the state machine's 256 KB payload and SNS's
# 256 KB message, whatever AWS answers: a run's whole diagnosis stays under about 20 KB.
MAX_FINDINGS = 8
MAX_LINES = 25
MAX_LINE_CHARS = 300


class Finding(OutputModel):
    """One thing read about the failure: a title and the lines AWS's answers gave (the report renders
    them as they are)."""

    title: str = Field(max_length=MAX_LINE_CHARS)
    lines: list[str] = Field(max_length=MAX_LINES)


class Diagnosis(OutputModel):
    """The findings, and a one-line summary the verdict's reason carries."""

    summary: str = ""
    findings: list[Finding] = Field(default_factory=list, max_length=MAX_FINDINGS)
