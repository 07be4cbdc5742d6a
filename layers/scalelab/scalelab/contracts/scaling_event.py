"""An Auto Scaling launch or terminate event as EventBridge delivers it (OnScalingEvent).

Its own module because Powertools' ``EventBridgeModel`` builds its validator when it is imported
(about 10 ms of every cold start): only OnScalingEvent parses such events, while every function that
touches the run table imports ``contracts.scaleout`` (docs/performance.md, "Handler cold imports").
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import ConfigDict, Field

from scalelab.contracts.base import Timestamp
from scalelab.contracts.scaleout import AutoScalingDetail


class AutoScalingEvent(EventBridgeModel):
    """An EventBridge event from Auto Scaling with its detail typed."""

    model_config = ConfigDict(defer_build=True)  # as every contract (contracts/base.py)

    # EventBridge's id is a UUID; the bound keeps the run log's sort key within DynamoDB's 1024 bytes.
    id: str = Field(min_length=1, max_length=128)
    time: Timestamp
    detail: AutoScalingDetail
