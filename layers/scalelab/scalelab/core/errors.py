"""Errors a state machine can catch by name.

The class name becomes the Lambda ``errorType``, which is what a ``Catch`` or
``Retry`` in the ASL matches, so these names are part of the contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ScalelabError(Exception):
    """Base class: an expected failure with a message meant for a person."""


class InvalidInput(ScalelabError):
    """The run input or a function event is malformed; nothing was created."""

    @classmethod
    def from_pydantic(cls, what: str, errors: Iterable[Mapping[str, Any]]) -> InvalidInput:
        problems = []
        for err in errors:
            field = ".".join(str(part) for part in err["loc"]) or "(input)"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {message}")
        return cls(f"invalid {what}: " + "; ".join(problems))


class NoSubnets(ScalelabError):
    """No subnets were given and none could be found for the lab."""


class SubnetsUnusable(ScalelabError):
    """The subnets cannot hold the lab: two in one zone, or no way to the internet; nothing was created."""


class InstanceTypeNotOffered(ScalelabError):
    """No zone of the lab's subnets offers its instance type (or too few do); nothing was created."""


class LabBusy(ScalelabError):
    """Another run holds the lab's lock."""


class ForeignResource(ScalelabError):
    """A resource with this run's name exists but is not tagged for this run."""


class TargetsNotHealthy(ScalelabError):
    """The expected targets were not healthy by the deadline."""


class NoInstancesInService(ScalelabError):
    """The group has no InService instance of this run to stress; no command was sent."""


class ForeignCommand(ScalelabError):
    """The command to cancel was not sent for this run; it was left alone."""


class ScaleOutFailed(ScalelabError):
    """Auto Scaling tried to scale out, and every launch failed (the message holds AWS's reasons)."""


class ScaleOutTooSlow(ScalelabError):
    """The scaling policy asked for an instance, but its launch was still under way at the deadline."""


class NoScaleOut(ScalelabError):
    """By the deadline, neither an event nor the group's scaling activities showed a scale-out."""


class NoScaleIn(ScalelabError):
    """By the scale-in deadline, neither an event nor the group's scaling activities showed the
    group shrinking back to its capacity from before the scale-out."""


class ReportNotFound(ScalelabError):
    """The JSON report the verdict names is not in the reports bucket, so there is no page to draw."""
