"""Target health: a snapshot of the run's target group, and whether the expectation holds yet.

The state machine polls this in a Wait/Choice loop (no Lambda sleeps). Past
the deadline with the expectation still unmet, it raises TargetsNotHealthy,
whose message carries the last snapshot, so the verdict can say what was seen.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from scalelab.contracts.targets import CheckTargetsEvent, TargetSnapshot
from scalelab.core.aws import client
from scalelab.core.clock import as_utc, utc_iso
from scalelab.core.errors import TargetsNotHealthy
from scalelab.core.observability import logger


def check_targets(event: CheckTargetsEvent, now: float | None = None) -> TargetSnapshot:
    logger.append_keys(run_id=event.run_id)
    checked = time.time() if now is None else now
    since = as_utc(event.since).timestamp()
    descriptions = client("elbv2").describe_target_health(TargetGroupArn=event.target_group_arn)[
        "TargetHealthDescriptions"
    ]
    targets = {item["Target"]["Id"]: item["TargetHealth"]["State"] for item in descriptions}
    healthy = sorted(target for target, state in targets.items() if state == "healthy")
    if event.instance_id is not None:
        expectation = f"instance {event.instance_id} healthy"
        met = event.instance_id in healthy
    else:
        expectation = f"{event.healthy_count} healthy targets"
        met = len(healthy) >= (event.healthy_count or 0)
    elapsed = int(checked - since)
    snapshot = TargetSnapshot(
        expectation=expectation,
        expectation_met=met,
        counts=dict(sorted(Counter(targets.values()).items())),
        healthy_instances=healthy,
        targets=dict(sorted(targets.items())),
        checked_at=utc_iso(checked),
        elapsed_seconds=elapsed,
        deadline_at=utc_iso(since + event.within_seconds),
    )
    logger.info("target health", extra={"snapshot": snapshot.model_dump()})
    if not met and elapsed > event.within_seconds:
        seen = ", ".join(f"{count} {state}" for state, count in snapshot.counts.items()) or "no targets"
        raise TargetsNotHealthy(
            f"expected {expectation} within {event.within_seconds} s, but after {elapsed} s there were "
            f"{seen}; last snapshot: {json.dumps(snapshot.model_dump(), sort_keys=True)}"
        )
    return snapshot
