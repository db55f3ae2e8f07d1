"""``CircuitBreaker``: stops calling a model that keeps failing, and probes it again later.

Closed: calls pass; ``failure_threshold`` failures within ``window`` seconds open it. Open: calls
are refused at once (the fallback chain moves on) until ``reset_timeout`` seconds have passed.
Half-open: one probe call passes; its success closes the breaker, its failure opens it again.
Every breaker is listed by ``circuit_states()`` so ``keel doctor`` and traces can show them.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "CircuitState", "circuit_states"]

CircuitState = Literal["closed", "open", "half_open"]

_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def circuit_states() -> dict[str, CircuitState]:
    """Name -> state of every live circuit breaker in this process."""
    return {b.name: b.state for b in sorted(_breakers, key=lambda b: b.name)}


class CircuitBreaker:
    """Failure counting over a sliding time window, with a single half-open probe."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        window: float = 60.0,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or window <= 0 or reset_timeout < 0:
            raise ValueError("failure_threshold >= 1, window > 0 and reset_timeout >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.window = window
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probing = False
        _breakers.add(self)

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.reset_timeout:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """True if a call may go through now; in half-open state only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures.clear()
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        now = self._clock()
        if self._probing or self._opened_at is not None:
            self._opened_at = now
            self._probing = False
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
        if len(self._failures) >= self.failure_threshold:
            self._opened_at = now
            self._failures.clear()

    def release(self) -> None:
        """End a probe that neither succeeded nor failed (e.g. it was cancelled)."""
        self._probing = False
