"""API keys and request-rate limits.

Keys are compared as SHA-256 digests with ``hmac.compare_digest`` (constant time); the server keeps
only digests: ``CREWRUN_API_KEY_HASHES`` holds them at rest, and plain ``CREWRUN_API_KEYS`` (handy in
development) are hashed when settings load. With keys configured every route but ``GET /health``
needs ``Authorization: Bearer <key>``. Each key gets a token
bucket: bursts up to the per-minute limit, then 429 with Retry-After. Without keys the API listens
on loopback only and does not limit.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
import time
from collections.abc import Callable

OPEN_PATHS = frozenset({"/health"})


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, digests: list[str]) -> None:
        self._digests = [d.lower() for d in digests]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str | None:
        """The digest of a valid bearer key, or None. Checks every stored digest (no early exit)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        presented = digest(authorization[7:].strip())
        found = None
        for stored in self._digests:
            if hmac.compare_digest(presented, stored):
                found = stored
        return found


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RateLimiter:
    """Token bucket per caller; the clock is injectable."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0.0 if the request may go; else seconds until a token is back."""
        if self.capacity <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / self.rate
