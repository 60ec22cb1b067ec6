"""Exponential backoff with jitter, so many agents that lost the service do not return in step."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 0.25, cap: float = 30.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.failures = 0
        # Jitter only spreads retries in time; it needs no cryptographic randomness.
        self._rng = rng or random.Random()  # noqa: S311

    def next(self, at_least: float | None = None) -> float:
        """The next pause: half the exponential step, plus a random share of the other half."""
        step = min(self.cap, self.base * 2.0**self.failures)
        self.failures = min(self.failures + 1, 32)
        pause = step / 2 + self._rng.uniform(0, step / 2)
        return max(pause, min(at_least or 0.0, self.cap))

    def reset(self) -> None:
        self.failures = 0
