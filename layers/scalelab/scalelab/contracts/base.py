"""What every contract shares: the two model bases, timestamps, id patterns, and the parser.

Inputs (what a person or the state machine sends) forbid unknown fields, so a
typo never silently falls back to a default; outputs (what a step returns for
later states) ignore fields they do not need.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from scalelab.core.clock import as_utc
from scalelab.core.errors import InvalidInput

LAB_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$|^[a-z0-9]$"
RUN_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
SUBNET_ID_PATTERN = r"^subnet-[0-9a-f]{8,17}$"
VPC_ID_PATTERN = r"^vpc-[0-9a-f]{8,17}$"

# The moments a run can record. Bounding them here means no later date
# arithmetic (a deadline, a duration, a conversion to UTC) can overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _recordable(moment: datetime) -> datetime:
    """``moment`` in UTC, or a ValueError (which pydantic reports) when it is out of range."""
    try:
        utc = as_utc(moment)
    except OverflowError:  # an offset pushing year 1 or 9999 past the calendar's ends
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"{moment.isoformat()} is not a time a run can have (UTC years 1970 to 2999)")
    return utc


def _timestamp_text(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    _recordable(moment)
    return value


# Timestamps travel through the state machine as ISO-8601 strings; held in UTC.
Timestamp = Annotated[datetime, Field(strict=False), AfterValidator(_recordable)]
# One a step wrote and a later one reads back (Judge): kept as written, checked to be readable.
TimestampText = Annotated[str, AfterValidator(_timestamp_text)]
RunId = Annotated[str, Field(pattern=RUN_ID_PATTERN)]


# Every model here is built (its validator and serializer) when it is first used, not when its
# module is imported (``defer_build``): a function imports, through the steps and the store, many
# models it never uses, and each built at import added to every cold start. docs/performance.md
class InputModel(BaseModel):
    """Base of what a person or the state machine sends: strict, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class OutputModel(BaseModel):
    """Base of what a step returns for later states to read."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_event(event: Any, model: type[ModelT], what: str, context: Any = None) -> ModelT:
    """Validate ``event`` as ``model``; every bad field becomes one InvalidInput naming them all.

    ``context`` reaches the model's validators (the run input's defaults and limits).
    """
    if not isinstance(event, dict):
        raise InvalidInput(f"invalid {what}: expected a JSON object, got {type(event).__name__}")
    try:
        return model.model_validate(event, context=context)
    except ValidationError as exc:
        raise InvalidInput.from_pydantic(what, _paths_in_the_input(exc, model, event)) from None


def _paths_in_the_input(exc: ValidationError, model: type[BaseModel], event: dict[str, Any]) -> list[Any]:
    """The errors with each location as a path in ``event``: a discriminated union (a model with a
    ``discriminator`` ClassVar) puts the chosen variant's tag first, which is no field of the input."""
    errors: list[Any] = list(exc.errors())
    discriminator = getattr(model, "discriminator", None)
    if discriminator is None:
        return errors
    tag = event.get(discriminator)
    return [{**error, "loc": error["loc"][1:]} if error["loc"][:1] == (tag,) else error for error in errors]
