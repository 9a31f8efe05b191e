"""Token bucket that paces transmissions of one simulated RTU."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate_per_s`` on average with bursts of at most ``burst`` items.

    Not thread-safe: one sender thread owns it.
    """

    __slots__ = ("rate_per_s", "burst", "_tokens", "_last_s")

    def __init__(self, rate_per_s: float, *, burst: float | None = None, now_s: float = 0.0) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"token bucket: rate_per_s must be > 0, got {rate_per_s}")
        self.rate_per_s = float(rate_per_s)
        # Default burst: 20 ms worth, at least one item, so a 5 ms sender loop never stalls on rounding.
        self.burst = float(burst) if burst is not None else max(1.0, rate_per_s * 0.02)
        if self.burst < 1.0:
            raise ValueError(f"token bucket: burst must be >= 1, got {self.burst}")
        self._tokens = self.burst
        self._last_s = now_s

    def available(self, now_s: float) -> int:
        """Whole items that may be sent now (refills first)."""
        elapsed = max(0.0, now_s - self._last_s)
        self._last_s = max(self._last_s, now_s)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        return int(self._tokens)

    def consume(self, n: int) -> None:
        if n < 0 or n > self._tokens + 1e-9:
            raise ValueError(f"token bucket: cannot take {n} of {self._tokens:.2f} tokens")
        self._tokens -= n
