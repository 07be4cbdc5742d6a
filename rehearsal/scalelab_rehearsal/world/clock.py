"""The world's clock: ``speed`` simulated seconds to each real second, and the world's timers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# One real second is DEFAULT_SPEED simulated seconds.
DEFAULT_SPEED = 3600.0
TICK_SECONDS = 0.02  # real seconds between two looks at the world


def now_iso() -> str:
    """The real time, as AWS writes it in events and as the app writes it in answers."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Clock:
    """Simulated seconds since the clock was made, and actions due after some of them."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be above 0")
        self.speed = speed
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._timers: list[threading.Timer] = []

    def now(self) -> float:
        """Simulated seconds since the world started."""
        return (time.monotonic() - self._started) * self.speed

    def later(self, simulated_seconds: float, action: Callable[..., Any], *args: Any) -> None:
        """Do ``action`` after ``simulated_seconds`` of the world's clock, unless the world stops first."""
        timer = threading.Timer(simulated_seconds / self.speed, action, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def wait(self, real_seconds: float) -> bool:
        """Wait ``real_seconds``; True as soon as the world has stopped."""
        return self._stop.wait(real_seconds)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop the world: the ticker ends and the actions still due are cancelled."""
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
