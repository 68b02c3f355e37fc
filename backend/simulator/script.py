"""Fault script of the LLM simulator: which agent gets which failure, and how often.

The simulator is a test and demo tool. A *rule* says "the next N calls of agent X get fault K";
rules are consumed in order, so ``[429 x2, then healthy]`` is two rules' worth of state at most.
An *outage* is a time window during which every call (of every agent, or of one) gets a 503.

Every call is recorded (agent, task hint, what was answered) so tests can count provider calls per
agent from the simulator's own log instead of trusting the client's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

FaultKind = Literal[
    "rate_limit",  # 429 with Retry-After / retry-after-ms
    "server_error",  # 5xx (status configurable, default 503)
    "slow",  # answers correctly after delay_s
    "timeout",  # sleeps delay_s (default 120) before answering: the client should time out
    "reset",  # drops the connection without a response
    "malformed",  # 200 with a body that is not JSON
    "auth",  # 401 invalid_api_key
    "quota",  # 429 insufficient_quota
    "context_length",  # 400 context_length_exceeded
    "content_policy",  # 400 content_filter
    "huge",  # 200 with an answer of size_mb megabytes: runs a worker with a memory limit out of memory
]

FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


@dataclass
class FaultRule:
    kind: FaultKind
    agent: str = "*"
    count: int | None = 1  # None: forever (until cleared)
    probability: float = 1.0  # <1.0: a seeded coin decides per matching call
    status: int | None = None
    retry_after_s: float | None = None
    delay_s: float | None = None
    size_mb: float | None = None  # "huge": the answer's size (default 64 MB)
    message: str | None = None

    def matches(self, agent: str) -> bool:
        return self.agent in ("*", agent)

    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0


@dataclass
class Outage:
    until: float  # monotonic deadline
    agent: str = "*"


@dataclass
class RecordedCall:
    seq: int
    agent: str
    task_hint: str
    outcome: str  # "ok" or the fault kind
    status: int
    at: float


@dataclass
class FaultScript:
    """Thread-safe fault state; the clock and the coin are injectable for tests."""

    clock: Callable[[], float] = time.monotonic
    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    calls: list[RecordedCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    def add_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self.rules.extend(rules)

    def start_outage(self, duration_s: float, agent: str = "*") -> None:
        with self._lock:
            self.outages.append(Outage(until=self.clock() + duration_s, agent=agent))

    def heal(self) -> None:
        """Clear every rule and outage: the provider is healthy again."""
        with self._lock:
            self.rules.clear()
            self.outages.clear()

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def next_fault(self, agent: str) -> FaultRule | None:
        """Pick (and consume) the fault for this call, or None for a healthy answer."""
        with self._lock:
            now = self.clock()
            self.outages = [o for o in self.outages if o.until > now]
            if any(o.agent in ("*", agent) for o in self.outages):
                return FaultRule(kind="server_error", status=503, message="service outage")
            for rule in self.rules:
                if rule.exhausted() or not rule.matches(agent):
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                return rule
            self.rules = [r for r in self.rules if not r.exhausted()]
            return None

    def record(self, agent: str, task_hint: str, outcome: str, status: int) -> None:
        with self._lock:
            self.calls.append(
                RecordedCall(len(self.calls) + 1, agent, task_hint, outcome, status, time.time())
            )

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            now = self.clock()
            return {
                "rules": [asdict(r) for r in self.rules if not r.exhausted()],
                "outages": [
                    {"agent": o.agent, "remaining_s": round(o.until - now, 3)}
                    for o in self.outages
                    if o.until > now
                ],
                "calls": len(self.calls),
            }

    def calls_as_dicts(self, agent: str | None = None) -> list[dict[str, object]]:
        with self._lock:
            return [asdict(c) for c in self.calls if agent is None or c.agent == agent]
