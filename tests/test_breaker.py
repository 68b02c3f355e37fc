"""The circuit breaker on SQLite and on the local PostgreSQL, driven by a hand-advanced clock."""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.breaker import BreakerConfig, BreakerState, CircuitBreaker, Permit, config_from
from backend.db.database import Database
from backend.db.engine import make_engine, make_session_factory
from backend.db.models import BreakerCall, BreakerEvent, CircuitBreakerRow
from backend.exceptions.execution_errors import CircuitOpenError
from tests.commit_faults import CommitFaults
from tests.postgres import fresh_database, migrated_sqlite

SERVICE = "openai"
T0 = 1_000_000.0
COUNTED = ["network", "timeout", "external_service"]
NEUTRAL = [
    "validation",
    "authentication",
    "content_policy",
    "context_length",
    "quota_exhausted",
    "rate_limit",
]


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    breaker: CircuitBreaker
    clock: FakeClock
    sessions: sessionmaker[Session]

    def call(self, outcome: str | None, service: str = SERVICE) -> Permit:
        """One permitted call: acquire, then record ``outcome`` (None = success)."""
        permit = self.breaker.acquire(service)
        self.breaker.record(permit, outcome)
        return permit

    def calls(self, outcomes: list[str | None], service: str = SERVICE) -> None:
        for outcome in outcomes:
            self.call(outcome, service)

    def state(self, service: str = SERVICE) -> BreakerState:
        state = self.breaker.state(service)
        assert state is not None
        return state

    def transitions(self, service: str = SERVICE) -> list[tuple[str, str, str]]:
        return [(e.from_state, e.to_state, e.reason) for e in self.breaker.events(service)]

    def row_counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return {
                model.__tablename__: s.execute(select(func.count()).select_from(model)).scalar_one()
                for model in (CircuitBreakerRow, BreakerCall, BreakerEvent)
            }

    def open_breaker(self) -> None:
        """Open it by consecutive failures; leaves the clock where it opened."""
        self.calls(["network"] * self.breaker.config.consecutive_failures)
        assert self.state().state == "open"


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness(any_db_url: str) -> Iterator[MakeHarness]:
    engines: list[Engine] = []

    def make(**config: Any) -> Harness:
        engine = make_engine(any_db_url)
        engines.append(engine)
        sessions = make_session_factory(engine)
        clock = FakeClock()
        breaker = CircuitBreaker(
            Database(sessions), BreakerConfig(**config), clock=clock, rng=random.Random(0)
        )
        return Harness(breaker, clock, sessions)

    yield make
    for engine in engines:
        engine.dispose()


def _jittered(wait: float, draws: int = 1, jitter: float = 0.2) -> float:
    """The retry_after_s the breaker reports on its ``draws``-th rejection (same seeded rng)."""
    rng = random.Random(0)
    factor = 0.0
    for _ in range(draws):
        factor = rng.uniform(0.0, jitter)
    return max(0.1, wait) * (1.0 + factor)


# ----- closed -----


def test_closed_breaker_stays_closed_under_any_number_of_successes(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1, min_calls=1, failure_rate=0.01)
    for _ in range(25):
        assert h.call(None) == Permit(SERVICE, probe=False)
    state = h.state(SERVICE)
    assert (state.state, state.window_calls, state.failure_rate, state.consecutive_failures) == (
        "closed",
        25,
        0.0,
        0,
    )
    assert (state.opened_at, state.next_probe_at) == (None, None)
    assert h.transitions() == []


@pytest.mark.parametrize("category", NEUTRAL)
def test_non_counted_failures_never_open_the_breaker_however_many(
    make_harness: MakeHarness, category: str
) -> None:
    h = make_harness(consecutive_failures=2, min_calls=1, failure_rate=0.01)
    for _ in range(30):
        assert h.call(category) == Permit(SERVICE)
    state = h.state(SERVICE)
    assert (state.state, state.window_calls, state.failure_rate, state.consecutive_failures) == (
        "closed",
        0,
        0.0,
        0,
    )
    assert h.transitions() == []


@pytest.mark.parametrize(
    ("category", "count_rate_limits"),
    [("network", False), ("timeout", False), ("external_service", False), ("rate_limit", True)]
    + [(c, True) for c in COUNTED],
)
def test_counted_failures_in_a_row_open_the_breaker_exactly_at_the_threshold(
    make_harness: MakeHarness, category: str, count_rate_limits: bool
) -> None:
    h = make_harness(
        consecutive_failures=3, min_calls=100, cooldown_s=30.0, count_rate_limits=count_rate_limits
    )
    h.calls([category, category])
    state = h.state(SERVICE)
    assert (state.state, state.consecutive_failures, state.window_calls, state.failure_rate) == (
        "closed",
        2,
        2,
        1.0,
    )

    h.clock.advance(5.0)
    h.call(category)

    state = h.state(SERVICE)
    assert (state.state, state.consecutive_failures) == ("open", 3)
    assert (state.opened_at, state.next_probe_at) == (T0 + 5.0, T0 + 35.0)
    assert h.transitions() == [("closed", "open", "3 consecutive failures")]


def test_rate_limit_counts_only_when_count_rate_limits_is_set(make_harness: MakeHarness) -> None:
    ignoring = make_harness(consecutive_failures=3, min_calls=100)
    ignoring.calls(["rate_limit"] * 3, service="ignoring")
    counting = make_harness(consecutive_failures=3, min_calls=100, count_rate_limits=True)
    counting.calls(["rate_limit"] * 3, service="counting")

    assert ignoring.state("ignoring").state == "closed"
    assert counting.state("counting").state == "open"


def test_a_success_between_failures_resets_the_consecutive_count(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=3, min_calls=100)
    h.calls(["network", "timeout", None, "external_service", "network"])
    state = h.state(SERVICE)
    assert (state.state, state.consecutive_failures, state.window_calls) == ("closed", 2, 5)

    h.call("timeout")
    assert h.state(SERVICE).state == "open"
    assert h.transitions() == [("closed", "open", "3 consecutive failures")]


def test_a_success_after_a_single_failure_ends_the_run(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=2, min_calls=100)
    h.calls(["network", None, "network"])

    state = h.state(SERVICE)
    assert (state.state, state.consecutive_failures) == ("closed", 1)


def test_a_success_of_one_service_leaves_another_services_run_of_failures_alone(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(consecutive_failures=3, min_calls=100)
    h.calls(["network", "network"], service="anthropic")
    h.call(None, service="openai")

    assert h.state("anthropic").consecutive_failures == 2
    h.call("network", service="anthropic")
    assert h.state("anthropic").state == "open"


def test_record_is_true_only_for_the_outcome_that_opened_a_closed_breaker(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=2, min_calls=100, cooldown_s=30.0)
    late = h.breaker.acquire(SERVICE)
    assert h.breaker.record(h.breaker.acquire(SERVICE), None) is False
    assert h.breaker.record(h.breaker.acquire(SERVICE), "network") is False
    assert h.breaker.record(h.breaker.acquire(SERVICE), "network") is True  # a new incident
    assert h.breaker.record(late, "network") is False  # admitted before it opened: same incident
    h.clock.advance(30.0)
    assert h.breaker.record(h.breaker.acquire(SERVICE), "network") is False  # a failed probe reopens it

    by_rate = make_harness(consecutive_failures=100, min_calls=2, failure_rate=0.5)
    assert by_rate.breaker.record(by_rate.breaker.acquire("rated"), None) is False
    assert by_rate.breaker.record(by_rate.breaker.acquire("rated"), "timeout") is True
    disabled = make_harness(enabled=False, consecutive_failures=1)
    assert disabled.breaker.record(Permit("off", probe=True), "network") is False


def test_a_non_counted_failure_neither_counts_nor_breaks_a_run_of_failures(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=3, min_calls=100)
    h.calls(["network", "authentication", "network", "validation"])
    state = h.state(SERVICE)
    assert (state.state, state.consecutive_failures, state.window_calls) == ("closed", 2, 2)

    h.call("timeout")
    assert h.state(SERVICE).state == "open"


# ----- closed -> open by failure rate -----


@pytest.mark.parametrize(
    ("outcomes", "expected_state", "expected_transitions"),
    [
        ([None, None, "network", "network"], "open", [("closed", "open", "2/4 calls failed within 60s")]),
        (["network", None, None, "timeout"], "open", [("closed", "open", "2/4 calls failed within 60s")]),
        (
            [None, "network", "network", "network"],
            "open",
            [("closed", "open", "3/4 calls failed within 60s")],
        ),
        ([None, None, None, "network"], "closed", []),  # 1/4 is below the rate
        ([None, None, None, "network", "network"], "closed", []),  # 2/5 is below the rate
        (["network", "network", "network"], "closed", []),  # 100 %, but fewer than min_calls
        (["network", None, "network"], "closed", []),
        (["network"] * 3 + ["authentication"] * 5, "closed", []),  # neutral outcomes are not calls
    ],
)
def test_failure_rate_opens_the_breaker_only_once_min_calls_were_made(
    make_harness: MakeHarness,
    outcomes: list[str | None],
    expected_state: str,
    expected_transitions: list[tuple[str, str, str]],
) -> None:
    h = make_harness(min_calls=4, failure_rate=0.5, consecutive_failures=100, window_s=60.0)
    h.calls(outcomes)
    assert h.state(SERVICE).state == expected_state
    assert h.transitions() == expected_transitions


def test_calls_older_than_window_s_no_longer_count_toward_the_failure_rate(make_harness: MakeHarness) -> None:
    h = make_harness(min_calls=4, failure_rate=0.5, consecutive_failures=100, window_s=60.0)
    h.calls(["network"] * 3)
    h.clock.advance(60.5)
    h.call("network")  # 4/4 if the old calls still counted

    state = h.state(SERVICE)
    assert (state.state, state.window_calls, state.failure_rate) == ("closed", 1, 1.0)
    assert h.transitions() == []


def test_a_call_exactly_window_s_old_is_still_in_the_window(make_harness: MakeHarness) -> None:
    h = make_harness(min_calls=4, failure_rate=0.5, consecutive_failures=100, window_s=60.0)
    h.calls(["network"] * 3)
    h.clock.advance(60.0)
    h.call("network")

    assert h.state(SERVICE).state == "open"
    assert h.transitions() == [("closed", "open", "4/4 calls failed within 60s")]


def test_a_success_also_evicts_calls_older_than_window_s(make_harness: MakeHarness) -> None:
    h = make_harness(min_calls=4, failure_rate=0.5, consecutive_failures=100, window_s=60.0)
    h.calls(["network", "network", None])
    h.clock.advance(30.0)
    h.call(None)
    h.clock.advance(31.0)
    h.call(None)  # the first three are now 61 s old

    state = h.state(SERVICE)
    assert (state.window_calls, state.failure_rate) == (2, 0.0)


def test_successes_keep_the_stored_calls_bounded_by_about_one_and_a_half_windows(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(min_calls=4, failure_rate=0.5, consecutive_failures=100, window_s=60.0)
    stored = []
    for _ in range(120):  # one success every 5 s for 10 minutes
        h.call(None)
        stored.append(h.row_counts()["breaker_calls"])
        h.clock.advance(5.0)
    # 12 calls fit in a window; old ones are deleted at most half a window late.
    assert max(stored) <= 18
    assert stored[-1] >= 12  # the window itself is kept


def test_a_success_after_the_breaker_opened_elsewhere_leaves_it_open_and_its_counts_alone(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(consecutive_failures=3, cooldown_s=30.0)
    admitted = h.breaker.acquire(SERVICE)  # admitted while closed
    h.calls(["network"] * 3)  # meanwhile other calls open it
    assert h.state().state == "open"

    assert h.breaker.record(admitted, None) is False
    state = h.state()
    assert (state.state, state.consecutive_failures) == ("open", 3)


@pytest.mark.postgresql
def test_a_success_racing_the_failure_that_opens_the_breaker_leaves_its_counts_alone() -> None:
    # PostgreSQL only: under read committed, another worker's failure can open the breaker between
    # this success's read of the state and its update (SQLite's single writer rules that out).
    config = BreakerConfig(consecutive_failures=3, min_calls=100, cooldown_s=30.0)
    with fresh_database(migrated=True) as url:
        engines = [make_engine(url), make_engine(url)]
        try:
            here, elsewhere = (
                CircuitBreaker(
                    Database(make_session_factory(e)), config, clock=FakeClock(), rng=random.Random(0)
                )
                for e in engines
            )
            for _ in range(2):
                here.record(here.acquire(SERVICE), "network")
            admitted = here.acquire(SERVICE)
            raced: list[str] = []

            @event.listens_for(engines[0], "before_cursor_execute")
            def failure_elsewhere(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                if statement.startswith("UPDATE circuit_breakers SET consecutive_failures") and not raced:
                    raced.append(statement)
                    elsewhere.record(elsewhere.acquire(SERVICE), "timeout")  # the third: it opens

            here.record(admitted, None)

            state = here.state(SERVICE)
            assert raced and state is not None
            assert (state.state, state.consecutive_failures) == ("open", 3)
        finally:
            for engine in engines:
                engine.dispose()


def test_a_breaker_row_lost_with_a_rolled_back_transaction_is_made_again(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=2)
    with pytest.raises(RuntimeError), h.breaker._db.transaction("rolled back") as s:
        h.breaker.acquire_in(s, SERVICE)  # this process now believes the row exists
        raise RuntimeError("the attempt's transaction fails")
    assert h.row_counts()["circuit_breakers"] == 0

    h.calls(["network", "network"])
    assert h.state().state == "open"


def test_state_reports_only_the_calls_within_window_s(make_harness: MakeHarness) -> None:
    h = make_harness(min_calls=4, failure_rate=0.5, consecutive_failures=100, window_s=60.0)
    h.calls([None, "network", "network"])
    state = h.state(SERVICE)
    assert (state.window_calls, state.failure_rate) == (3, 0.667)

    h.clock.advance(61.0)  # no call since: the window is empty now

    state = h.state(SERVICE)
    assert (state.window_calls, state.failure_rate) == (0, 0.0)
    [listed] = h.breaker.states()
    assert (listed.window_calls, listed.failure_rate) == (0, 0.0)


# ----- open -----


@pytest.mark.parametrize("elapsed", [0.0, 10.0, 29.5, 29.9])
def test_open_breaker_fails_fast_with_the_time_until_the_next_probe(
    make_harness: MakeHarness, elapsed: float
) -> None:
    h = make_harness(consecutive_failures=2, cooldown_s=30.0, jitter=0.2)
    h.open_breaker()
    next_probe_at = h.state(SERVICE).next_probe_at
    assert next_probe_at == T0 + 30.0
    h.clock.advance(elapsed)

    with pytest.raises(CircuitOpenError) as caught:
        h.breaker.acquire(SERVICE)

    assert next_probe_at is not None
    wait = next_probe_at - h.clock.now
    error = caught.value
    assert error.retry_after_s is not None
    assert wait <= error.retry_after_s <= wait * 1.2
    assert error.retry_after_s == _jittered(wait)
    assert error.service == SERVICE
    assert error.code == "CIRCUIT_OPEN"
    assert error.category == "circuit_open"
    assert str(error) == f"circuit of {SERVICE} is open; next probe in {wait:.1f}s"
    state = h.state(SERVICE)
    assert (state.state, state.next_probe_at) == ("open", T0 + 30.0)
    assert h.transitions() == [("closed", "open", "2 consecutive failures")]


def test_retry_after_is_never_below_a_tenth_of_a_second(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0, jitter=0.2)
    h.open_breaker()
    h.clock.advance(29.99)  # 10 ms until the next probe

    with pytest.raises(CircuitOpenError) as caught:
        h.breaker.acquire(SERVICE)

    assert caught.value.retry_after_s == _jittered(0.1)
    assert 0.1 <= caught.value.retry_after_s <= 0.12
    assert str(caught.value) == f"circuit of {SERVICE} is open; next probe in 0.0s"


def test_each_rejection_draws_fresh_jitter_within_bounds(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0, jitter=0.2)
    h.open_breaker()
    retry_afters = []
    for _ in range(20):
        with pytest.raises(CircuitOpenError) as caught:
            h.breaker.acquire(SERVICE)
        retry_afters.append(caught.value.retry_after_s)

    assert retry_afters == [_jittered(30.0, draws=n) for n in range(1, 21)]
    assert all(r is not None and 30.0 <= r <= 36.0 for r in retry_afters)
    assert len(set(retry_afters)) == 20


def test_after_cooldown_the_next_acquire_is_a_probe_and_the_breaker_is_half_open(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(consecutive_failures=2, cooldown_s=30.0)
    h.open_breaker()
    h.clock.advance(30.0)

    assert h.breaker.acquire(SERVICE) == Permit(SERVICE, probe=True)

    state = h.state(SERVICE)
    assert (state.state, state.next_probe_at) == ("half_open", T0 + 60.0)
    assert h.transitions() == [
        ("closed", "open", "2 consecutive failures"),
        ("open", "half_open", "cooldown over: probing"),
    ]


# ----- half_open -----


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_half_open_lets_through_only_half_open_probes_probes(make_harness: MakeHarness, probes: int) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0, half_open_probes=probes)
    h.open_breaker()
    h.clock.advance(30.0)

    permits = [h.breaker.acquire(SERVICE) for _ in range(probes)]
    with pytest.raises(CircuitOpenError) as caught:
        h.breaker.acquire(SERVICE)

    assert permits == [Permit(SERVICE, probe=True)] * probes
    assert caught.value.retry_after_s == _jittered(30.0)
    assert str(caught.value) == f"circuit of {SERVICE} is half_open; next probe in 30.0s"
    assert h.state(SERVICE).state == "half_open"
    assert [t[:2] for t in h.transitions()] == [("closed", "open"), ("open", "half_open")]


def test_a_probe_success_closes_the_breaker_and_empties_the_window(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=3, cooldown_s=30.0)
    h.calls([None, None, "network", "network", "network"])
    h.clock.advance(30.0)
    probe = h.breaker.acquire(SERVICE)

    h.breaker.record(probe, None)

    state = h.state(SERVICE)
    assert (state.state, state.window_calls, state.failure_rate, state.consecutive_failures) == (
        "closed",
        0,
        0.0,
        0,
    )
    assert (state.opened_at, state.next_probe_at) == (None, None)
    assert h.row_counts()["breaker_calls"] == 0
    assert h.breaker.acquire(SERVICE) == Permit(SERVICE, probe=False)
    assert h.transitions() == [
        ("closed", "open", "3 consecutive failures"),
        ("open", "half_open", "cooldown over: probing"),
        ("half_open", "closed", "probe succeeded"),
    ]


@pytest.mark.parametrize(
    ("outcome", "count_rate_limits", "expected_state", "expected_reason"),
    [
        (None, False, "closed", "probe succeeded"),
        ("network", False, "open", "probe failed (network)"),
        ("timeout", False, "open", "probe failed (timeout)"),
        ("external_service", False, "open", "probe failed (external_service)"),
        ("rate_limit", True, "open", "probe failed (rate_limit)"),
        ("rate_limit", False, "closed", "probe succeeded"),
        ("authentication", False, "closed", "probe succeeded"),
        ("validation", False, "closed", "probe succeeded"),
        ("content_policy", False, "closed", "probe succeeded"),
        ("context_length", False, "closed", "probe succeeded"),
        ("quota_exhausted", False, "closed", "probe succeeded"),
    ],
)
def test_the_probe_outcome_decides_between_closed_and_open(
    make_harness: MakeHarness,
    outcome: str | None,
    count_rate_limits: bool,
    expected_state: str,
    expected_reason: str,
) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0, count_rate_limits=count_rate_limits)
    h.open_breaker()
    h.clock.advance(30.0)
    probe = h.breaker.acquire(SERVICE)
    h.clock.advance(2.0)

    h.breaker.record(probe, outcome)

    state = h.state(SERVICE)
    assert state.state == expected_state
    assert h.transitions()[-1] == ("half_open", expected_state, expected_reason)
    assert len(h.transitions()) == 3
    if expected_state == "open":
        assert (state.opened_at, state.next_probe_at) == (T0 + 32.0, T0 + 62.0)
    else:
        assert (state.opened_at, state.next_probe_at, state.window_calls) == (None, None, 0)


def test_a_failed_probe_reopens_for_a_whole_new_cooldown(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0)
    h.open_breaker()
    h.clock.advance(30.0)
    h.breaker.record(h.breaker.acquire(SERVICE), "timeout")

    h.clock.advance(29.0)
    with pytest.raises(CircuitOpenError) as caught:
        h.breaker.acquire(SERVICE)
    retry_after = caught.value.retry_after_s
    assert retry_after is not None
    assert 1.0 <= retry_after <= 1.2

    h.clock.advance(1.0)
    assert h.breaker.acquire(SERVICE) == Permit(SERVICE, probe=True)
    assert h.transitions() == [
        ("closed", "open", "1 consecutive failures"),
        ("open", "half_open", "cooldown over: probing"),
        ("half_open", "open", "probe failed (timeout)"),
        ("open", "half_open", "cooldown over: probing"),
    ]


def test_a_probe_that_never_reports_does_not_block_the_breaker_forever(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0, half_open_probes=1)
    h.open_breaker()
    h.clock.advance(30.0)
    h.breaker.acquire(SERVICE)  # its worker dies: the outcome is never recorded

    h.clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        h.breaker.acquire(SERVICE)
    h.clock.advance(0.1)
    second = h.breaker.acquire(SERVICE)
    assert second == Permit(SERVICE, probe=True)
    assert h.state(SERVICE).next_probe_at == h.clock.now + 30.0
    with pytest.raises(CircuitOpenError):
        h.breaker.acquire(SERVICE)

    h.breaker.record(second, None)
    assert h.state(SERVICE).state == "closed"
    assert [t[:2] for t in h.transitions()] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


# ----- late outcomes -----


@pytest.mark.parametrize("outcome", [None, "network", "authentication"])
def test_a_late_outcome_of_a_call_admitted_before_opening_changes_nothing(
    make_harness: MakeHarness, outcome: str | None
) -> None:
    h = make_harness(consecutive_failures=3, min_calls=100, cooldown_s=30.0)
    permits = [h.breaker.acquire(SERVICE) for _ in range(4)]
    for permit in permits[:3]:
        h.breaker.record(permit, "network")
    before = h.state(SERVICE)
    assert before.state == "open"
    h.clock.advance(1.0)

    h.breaker.record(permits[3], outcome)

    assert h.state(SERVICE) == before
    assert h.row_counts() == {"circuit_breakers": 1, "breaker_calls": 3, "breaker_events": 1}


@pytest.mark.parametrize("outcome", [None, "network"])
def test_a_late_non_probe_outcome_while_half_open_neither_closes_nor_reopens(
    make_harness: MakeHarness, outcome: str | None
) -> None:
    h = make_harness(consecutive_failures=1, min_calls=100, cooldown_s=30.0)
    late = h.breaker.acquire(SERVICE)
    h.call("network")
    h.clock.advance(30.0)
    h.breaker.acquire(SERVICE)  # the probe, still in flight
    before = h.state(SERVICE)

    h.breaker.record(late, outcome)

    assert h.state(SERVICE) == before
    assert before.state == "half_open"
    assert [t[:2] for t in h.transitions()] == [("closed", "open"), ("open", "half_open")]


# ----- operators: events, reset, states -----


def test_events_record_the_full_transition_history_in_order(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=2, min_calls=100, cooldown_s=30.0)
    h.calls(["network", "timeout"])
    h.clock.advance(30.0)
    h.breaker.record(h.breaker.acquire(SERVICE), "external_service")
    h.clock.advance(30.0)
    h.breaker.record(h.breaker.acquire(SERVICE), None)
    h.calls(["timeout", "timeout"])
    h.breaker.reset(SERVICE)

    assert h.transitions() == [
        ("closed", "open", "2 consecutive failures"),
        ("open", "half_open", "cooldown over: probing"),
        ("half_open", "open", "probe failed (external_service)"),
        ("open", "half_open", "cooldown over: probing"),
        ("half_open", "closed", "probe succeeded"),
        ("closed", "open", "2 consecutive failures"),
        ("open", "closed", "reset by operator"),
    ]
    assert all(e.service == SERVICE for e in h.breaker.events(SERVICE))
    assert h.breaker.events("other") == []


def test_every_state_change_is_logged_with_its_service_both_states_and_the_reason(
    make_harness: MakeHarness, captured_logs: io.StringIO
) -> None:
    h = make_harness(consecutive_failures=2, min_calls=100, cooldown_s=30.0)
    h.calls(["network", "timeout"])
    h.clock.advance(30.0)
    h.call(None)

    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    changes = [line for line in lines if line.get("event") == "breaker.state_changed"]
    assert [(c["service"], c["from_state"], c["to_state"], c["reason"], c["level"]) for c in changes] == [
        (SERVICE, "closed", "open", "2 consecutive failures", "warning"),
        (SERVICE, "open", "half_open", "cooldown over: probing", "warning"),
        (SERVICE, "half_open", "closed", "probe succeeded", "warning"),
    ]


def test_the_breakers_transactions_are_named_for_logs_and_fault_injection(make_harness: MakeHarness) -> None:
    h = make_harness()
    faults = CommitFaults(Database(h.sessions))
    operations: dict[str, Callable[[], object]] = {
        "breaker.acquire": lambda: h.breaker.acquire(SERVICE),
        "breaker.record": lambda: h.breaker.record(Permit(SERVICE), None),
        "breaker.reset": lambda: h.breaker.reset(SERVICE),
    }
    for name, operation in operations.items():
        faults.arm(name, ConnectionResetError(name))
        with pytest.raises(ConnectionResetError, match=name):
            operation()

    assert faults.fired == list(operations)


def test_reset_closes_an_open_breaker_and_clears_its_counters(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=3, min_calls=100, cooldown_s=30.0)
    h.calls([None, "network", "network", "network"])

    assert h.breaker.reset(SERVICE) is True

    state = h.state(SERVICE)
    assert (state.state, state.window_calls, state.consecutive_failures) == ("closed", 0, 0)
    assert (state.opened_at, state.next_probe_at) == (None, None)
    assert h.transitions()[-1] == ("open", "closed", "reset by operator")
    assert h.breaker.acquire(SERVICE) == Permit(SERVICE, probe=False)


def test_reset_closes_a_half_open_breaker(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1, cooldown_s=30.0)
    h.open_breaker()
    h.clock.advance(30.0)
    h.breaker.acquire(SERVICE)

    assert h.breaker.reset(SERVICE) is True

    assert h.state(SERVICE).state == "closed"
    assert h.transitions()[-1] == ("half_open", "closed", "reset by operator")


def test_reset_of_a_closed_breaker_clears_its_counters_without_an_event(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=3, min_calls=100)
    h.calls([None, "network", "network"])

    assert h.breaker.reset(SERVICE) is True

    state = h.state(SERVICE)
    assert (state.state, state.window_calls, state.consecutive_failures) == ("closed", 0, 0)
    assert h.transitions() == []


def test_reset_of_an_unknown_service_returns_false_and_creates_nothing(make_harness: MakeHarness) -> None:
    h = make_harness()

    assert h.breaker.reset("never-called") is False

    assert h.breaker.state("never-called") is None
    assert h.breaker.states() == []
    assert h.row_counts() == {"circuit_breakers": 0, "breaker_calls": 0, "breaker_events": 0}


def test_states_lists_every_service_sorted_by_name(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=1)
    assert h.breaker.states() == []
    for service in ["openai", "anthropic", "mistral", "gemini"]:
        h.breaker.acquire(service)
    h.call("network", service="mistral")

    states = h.breaker.states()

    assert [(s.service, s.state) for s in states] == [
        ("anthropic", "closed"),
        ("gemini", "closed"),
        ("mistral", "open"),
        ("openai", "closed"),
    ]
    assert states[2] == h.state("mistral")


def test_services_have_independent_breakers(make_harness: MakeHarness) -> None:
    h = make_harness(consecutive_failures=2, min_calls=100)
    h.calls(["network", "network"], service="anthropic")
    h.call("network", service="openai")

    assert h.state("anthropic").state == "open"
    state = h.state("openai")
    assert (state.state, state.consecutive_failures, state.window_calls) == ("closed", 1, 1)
    assert h.breaker.acquire("openai") == Permit("openai")
    assert h.transitions("openai") == []


# ----- configuration -----


def test_config_from_settings_maps_every_breaker_setting() -> None:
    settings = SimpleNamespace(
        breaker_enabled=False,
        breaker_window_s=90.0,
        breaker_min_calls=7,
        breaker_failure_rate=0.25,
        breaker_consecutive_failures=4,
        breaker_cooldown_s=12.5,
        breaker_half_open_probes=3,
        breaker_count_rate_limits=True,
    )

    assert config_from(settings) == BreakerConfig(
        enabled=False,
        window_s=90.0,
        min_calls=7,
        failure_rate=0.25,
        consecutive_failures=4,
        cooldown_s=12.5,
        half_open_probes=3,
        count_rate_limits=True,
        jitter=0.2,
    )


# ----- disabled -----


def test_a_disabled_breaker_always_permits_and_writes_nothing(make_harness: MakeHarness) -> None:
    h = make_harness(enabled=False, consecutive_failures=1, min_calls=1)
    for category in COUNTED * 5 + NEUTRAL + [None]:
        assert h.call(category) == Permit(SERVICE, probe=False)
    h.clock.advance(1_000.0)
    assert h.breaker.acquire(SERVICE) == Permit(SERVICE)
    h.breaker.record(Permit(SERVICE, probe=True), "network")

    assert h.row_counts() == {"circuit_breakers": 0, "breaker_calls": 0, "breaker_events": 0}
    assert h.breaker.state(SERVICE) is None
    assert h.breaker.states() == []
    assert h.breaker.events(SERVICE) == []


# ----- concurrency -----


@pytest.fixture(params=["sqlite", "postgresql"])
def race_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database of its own for the races (PostgreSQL: a new database per test)."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "race.db")
    else:
        with fresh_database(migrated=True) as url:
            yield url


def test_concurrent_counted_failures_open_the_breaker_exactly_once(
    race_db_url: str, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["race_db_url"]
    assert race_db_url.startswith(backend)
    engine = make_engine(race_db_url)
    try:
        breaker = CircuitBreaker(
            Database(make_session_factory(engine)),
            BreakerConfig(consecutive_failures=5, min_calls=100, cooldown_s=30.0),
            clock=FakeClock(),
            rng=random.Random(0),
        )
        workers = 20
        acquired = threading.Barrier(workers, timeout=120)

        def worker(_: int) -> Permit:
            permit = breaker.acquire(SERVICE)  # all 20 race to create the service's row too
            acquired.wait()  # every permit is taken while still closed, then all fail at once
            breaker.record(permit, "network")
            return permit

        with ThreadPoolExecutor(workers) as pool:
            permits = list(pool.map(worker, range(workers)))

        assert permits == [Permit(SERVICE, probe=False)] * workers
        events = breaker.events(SERVICE)
        assert [(e.from_state, e.to_state, e.reason) for e in events] == [
            ("closed", "open", "5 consecutive failures")
        ]
        state = breaker.state(SERVICE)
        assert state is not None
        assert (state.state, state.consecutive_failures, state.window_calls) == ("open", 5, 5)
        assert [s.service for s in breaker.states()] == [SERVICE]
    finally:
        engine.dispose()
