"""Time as an interface, so the core can run on a clock that tests own."""

import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic time source in seconds."""

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's monotonic clock."""

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
