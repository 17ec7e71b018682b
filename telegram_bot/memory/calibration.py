"""The learned ratio between a model server's token count and ours (pure state)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Calibration:
    """Per-model correction factor between the server's prompt count and ours.

    A local model's tokenizer may count 30% more than tiktoken; dividing our limit by the
    factor keeps the server's count inside the window. The factor rises at once to what the
    server reports (the next request must fit) and relaxes slowly when it reports less. It
    never goes below 1 (counting too low is the dangerous direction) or above 4. `Memory`
    saves it in the store, so a restart does not overflow once to learn it again.
    """

    MAX = 4.0

    def __init__(self) -> None:
        self._factors: dict[str, float] = {}

    def factor(self, model: str) -> float:
        return self._factors.get(model, 1.0)

    def load(self, factors: dict[str, float]) -> None:
        for model, factor in factors.items():
            self._factors.setdefault(model, min(self.MAX, max(1.0, factor)))

    def observe(self, model: str, counted: int, reported: int) -> bool:
        """Learns from one exchange; True when the factor changed enough to be worth saving."""
        if counted < 16 or reported <= 0:  # too small to say anything about the tokenizer
            return False
        ratio = reported / counted
        current = self.factor(model)
        learned = ratio if ratio > current else 0.8 * current + 0.2 * ratio
        learned = min(self.MAX, max(1.0, learned))
        self._factors[model] = learned
        if abs(learned - current) <= 0.01:
            return False
        log.info("model=%s token correction factor %.2f -> %.2f", model, current, learned)
        return True

    def overflowed(self, model: str) -> None:
        """The server said the prompt was too long although our count fit: count higher."""
        self._factors[model] = min(self.MAX, self.factor(model) * 1.25)
        log.info("model=%s token correction factor raised to %.2f", model, self._factors[model])
