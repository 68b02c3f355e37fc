"""Circuit breaker per external service, shared by every worker through the backend DB.

States: ``closed`` (calls go through; outcomes of counted calls fill a sliding window) → ``open``
(calls fail fast with :class:`CircuitOpenError` until the cooldown ends) → ``half_open`` (a bounded
number of probe calls go through; a probe that succeeds closes the breaker, one that fails opens it
for another cooldown).

It opens when, within ``window_s``, at least ``min_calls`` counted calls were made and the failure
rate reaches ``failure_rate``, or when ``consecutive_failures`` counted calls failed in a row. Only
transient service failures count (network, timeout, external_service; rate_limit if configured):
a 401, a bad request or a content refusal says nothing about the service's health.

Every transition is decided in a transaction that first locks the service's row (an UPDATE: a row
lock on PostgreSQL, the database write lock on SQLite), so concurrent workers see one state and
exactly one of them makes each transition. The common path of a healthy service takes no lock: a
closed breaker admits on a plain read, and a success adds its call to the window with updates
guarded by the closed state. The clock is injected: tests never sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from backend.db.database import Database
from backend.db.models import BreakerCall, BreakerEvent, CircuitBreakerRow
from backend.exceptions.categories import BREAKER_COUNTED, Category
from backend.exceptions.execution_errors import CircuitOpenError

log = structlog.get_logger("crewrun.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    enabled: bool = True
    window_s: float = 60.0
    min_calls: int = 10
    failure_rate: float = 0.5
    consecutive_failures: int = 5
    cooldown_s: float = 30.0
    half_open_probes: int = 1
    count_rate_limits: bool = False
    jitter: float = 0.2

    def counts(self, category: str) -> bool:
        return category in BREAKER_COUNTED or (self.count_rate_limits and category == Category.RATE_LIMIT)


@dataclass(frozen=True)
class Permit:
    service: str
    probe: bool = False


@dataclass(frozen=True)
class BreakerState:
    service: str
    state: str
    failure_rate: float
    window_calls: int
    consecutive_failures: int
    opened_at: float | None
    next_probe_at: float | None


class CircuitBreaker:
    def __init__(
        self,
        db: Database,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._known: set[str] = set()  # services whose row this process made sure exists
        self._pruned_at: dict[str, float] = {}  # when this process last pruned a service's old calls

    # ----- the two calls around every provider call: in a transaction of their own, or in the
    # caller's (a task attempt decides and records in the transactions it writes anyway) -----

    def acquire(self, service: str) -> Permit:
        """Let a call through, or raise CircuitOpenError with the time until a probe may run."""
        with self._db.transaction("breaker.acquire") as s:
            return self.acquire_in(s, service)

    def record(self, permit: Permit, category: str | None) -> bool:
        """The outcome of a permitted call: ``None`` for success, else the error's category.
        Returns True when this outcome opened a closed breaker (a new incident)."""
        with self._db.transaction("breaker.record") as s:
            return self.record_in(s, permit, category)

    def acquire_in(self, s: Session, service: str) -> Permit:
        if not self.config.enabled:
            return Permit(service)
        now = self._clock()
        self._ensure_row(s, service, now)
        if self._state(s, service) == CLOSED:
            # The common case decides from a plain read: a breaker that another worker opens
            # a moment later admits this call as one admitted just before it opened.
            return Permit(service)
        with self._locked(s, service, now) as row:
            if row.state == CLOSED:
                return Permit(service)
            if row.state == OPEN and now >= (row.next_probe_at or 0):
                self._move(s, row, HALF_OPEN, "cooldown over: probing", now)
                row.probes_in_flight = 1
                row.next_probe_at = now + self.config.cooldown_s  # a probe that never reports
                return Permit(service, probe=True)
            if row.state == HALF_OPEN and (
                row.probes_in_flight < self.config.half_open_probes or now >= (row.next_probe_at or 0)
            ):
                row.probes_in_flight += 1
                row.next_probe_at = now + self.config.cooldown_s
                return Permit(service, probe=True)
            wait = max(0.0, (row.next_probe_at or now) - now)
            raise CircuitOpenError(
                f"circuit of {service} is {row.state}; next probe in {wait:.1f}s",
                retry_after_s=max(0.1, wait) * (1.0 + self._rng.uniform(0.0, self.config.jitter)),
                service=service,
            )

    def record_in(self, s: Session, permit: Permit, category: str | None) -> bool:
        if not self.config.enabled:
            return False
        now = self._clock()
        counted_failure = category is not None and self.config.counts(category)
        if not permit.probe and not counted_failure:
            return self._record_uncounted(s, permit.service, ok=category is None, now=now)
        with self._locked(s, permit.service, now) as row:
            if permit.probe and row.state == HALF_OPEN:
                if counted_failure:
                    self._open(s, row, f"probe failed ({category})", now)
                else:  # the service answered: healthy enough to take traffic again
                    self._close(s, row, "probe succeeded", now)
                return False
            if row.state != CLOSED:
                return False  # a late failure of a call admitted before the breaker opened
            s.add(BreakerCall(service=permit.service, at=now, ok=False))
            row.consecutive_failures += 1
            self._prune(s, permit.service, now)
            s.flush()
            calls, failures = self._window(s, permit.service, now)
            if row.consecutive_failures >= self.config.consecutive_failures:
                self._open(s, row, f"{row.consecutive_failures} consecutive failures", now)
                return True
            if calls >= self.config.min_calls and failures / calls >= self.config.failure_rate:
                self._open(s, row, f"{failures}/{calls} calls failed within {self.config.window_s:g}s", now)
                return True
            return False

    # ----- operators -----

    def states(self) -> list[BreakerState]:
        now = self._clock()
        with self._db.read() as s:
            rows = list(s.scalars(select(CircuitBreakerRow).order_by(CircuitBreakerRow.service)))
            return [self._state_of(s, row, now) for row in rows]

    def state(self, service: str) -> BreakerState | None:
        now = self._clock()
        with self._db.read() as s:
            row = s.get(CircuitBreakerRow, service)
            return self._state_of(s, row, now) if row else None

    def reset(self, service: str) -> bool:
        now = self._clock()
        with self._db.transaction("breaker.reset") as s:
            if s.get(CircuitBreakerRow, service) is None:
                return False
            with self._locked(s, service, now) as row:
                self._close(s, row, "reset by operator", now)
        return True

    def events(self, service: str) -> list[BreakerEvent]:
        with self._db.read() as s:
            return list(
                s.scalars(
                    select(BreakerEvent).where(BreakerEvent.service == service).order_by(BreakerEvent.id)
                )
            )

    # ----- internals -----

    def _record_uncounted(self, s: Session, service: str, *, ok: bool, now: float) -> bool:
        """A success of an admitted call, or an outcome that says nothing about the service's
        health (neutral: nothing to record). Without the row lock: a success only adds to the
        window and ends a run of failures, and both updates are guarded by the closed state, so a
        breaker another worker just opened is left as it is (its window is cleared when it closes)."""
        if not ok or self._state(s, service) != CLOSED:
            return False
        s.add(BreakerCall(service=service, at=now, ok=True))
        s.execute(
            update(CircuitBreakerRow)
            .where(
                CircuitBreakerRow.service == service,
                CircuitBreakerRow.state == CLOSED,
                CircuitBreakerRow.consecutive_failures != 0,
            )
            .values(consecutive_failures=0)
        )
        if now - self._pruned_at.get(service, 0.0) >= self.config.window_s / 2:
            self._prune(s, service, now)
        return False

    @staticmethod
    def _state(s: Session, service: str) -> str | None:
        return s.execute(select(CircuitBreakerRow.state).where(CircuitBreakerRow.service == service)).scalar()

    def _prune(self, s: Session, service: str, now: float) -> None:
        """Calls older than the window count for nothing: deleted with every failure, and with a
        success at most twice per window and process (reads only count the window anyway)."""
        s.execute(
            delete(BreakerCall).where(
                BreakerCall.service == service, BreakerCall.at < now - self.config.window_s
            )
        )
        self._pruned_at[service] = now

    @contextmanager
    def _locked(self, s: Session, service: str, now: float) -> Iterator[CircuitBreakerRow]:
        self._ensure_row(s, service, now)
        # The no-op UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) before
        # anything is read, so two workers cannot both decide from the same old state.
        locked = s.execute(
            update(CircuitBreakerRow).where(CircuitBreakerRow.service == service).values(updated_at=now)
        )
        if not locked.rowcount:  # type: ignore[attr-defined]
            # Made by a transaction of this process that then rolled back: make it again.
            self._known.discard(service)
            self._ensure_row(s, service, now)
        row = s.get(CircuitBreakerRow, service, populate_existing=True)
        assert row is not None
        yield row

    def _ensure_row(self, s: Session, service: str, now: float) -> None:
        """Once per service and process: an insert that does nothing when another worker (or an
        earlier run) created the row first."""
        if service in self._known:
            return
        dialect = s.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        s.execute(
            insert(CircuitBreakerRow)
            .values(service=service, state=CLOSED, updated_at=now, consecutive_failures=0, probes_in_flight=0)
            .on_conflict_do_nothing(index_elements=["service"])
        )
        self._known.add(service)

    def _window(self, s: Session, service: str, now: float) -> tuple[int, int]:
        """Calls and failures within the window (older rows are pruned on writes, not on reads)."""
        failed = func.coalesce(func.sum(case((BreakerCall.ok.is_(False), 1), else_=0)), 0)
        calls, failures = s.execute(
            select(func.count(), failed).where(
                BreakerCall.service == service, BreakerCall.at >= now - self.config.window_s
            )
        ).one()
        return int(calls), int(failures)

    def _open(self, s: Session, row: CircuitBreakerRow, reason: str, now: float) -> None:
        self._move(s, row, OPEN, reason, now)
        row.opened_at = now
        row.next_probe_at = now + self.config.cooldown_s
        row.probes_in_flight = 0

    def _close(self, s: Session, row: CircuitBreakerRow, reason: str, now: float) -> None:
        if row.state != CLOSED:
            self._move(s, row, CLOSED, reason, now)
        row.consecutive_failures = 0
        row.probes_in_flight = 0
        row.opened_at = row.next_probe_at = None
        s.execute(delete(BreakerCall).where(BreakerCall.service == row.service))

    @staticmethod
    def _move(s: Session, row: CircuitBreakerRow, to: str, reason: str, now: float) -> None:
        s.add(BreakerEvent(service=row.service, from_state=row.state, to_state=to, reason=reason[:300]))
        log.warning(
            "breaker.state_changed", service=row.service, from_state=row.state, to_state=to, reason=reason
        )
        row.state = to

    def _state_of(self, s: Session, row: CircuitBreakerRow, now: float) -> BreakerState:
        calls, failures = self._window(s, row.service, now)
        return BreakerState(
            service=row.service,
            state=row.state,
            failure_rate=round(failures / calls, 3) if calls else 0.0,
            window_calls=calls,
            consecutive_failures=row.consecutive_failures,
            opened_at=row.opened_at,
            next_probe_at=row.next_probe_at,
        )


def config_from(settings: Any) -> BreakerConfig:
    return BreakerConfig(
        enabled=settings.breaker_enabled,
        window_s=settings.breaker_window_s,
        min_calls=settings.breaker_min_calls,
        failure_rate=settings.breaker_failure_rate,
        consecutive_failures=settings.breaker_consecutive_failures,
        cooldown_s=settings.breaker_cooldown_s,
        half_open_probes=settings.breaker_half_open_probes,
        count_rate_limits=settings.breaker_count_rate_limits,
    )
