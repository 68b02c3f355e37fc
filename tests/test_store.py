"""The store on SQLite and on the local PostgreSQL: idempotent, monotonic writes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import OperationalError

from backend.db.store import CrewNameTaken, IdempotencyKeyReused, LogLine, Store, decode_cursor
from backend.exceptions.records import ErrorRecord
from backend.status import ExecutionStatus as E
from backend.status import TaskStatus as T
from tests.commit_faults import CommitFaults

SPEC = {"tasks": [{"name": "one", "agent": "a"}, {"name": "two", "agent": "b"}]}


@pytest.fixture
def db(any_db_url: str) -> Store:
    return Store.from_url(any_db_url)


def _execution(db: Store, key: str | None = None, body: str = "h") -> str:
    execution, _ = db.create_execution(
        crew_id=None, crew_name="c", spec=SPEC, inputs={"x": 1}, idempotency_key=key, request_hash=body
    )
    return execution.id


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([E.RUNNING], E.RUNNING),
        ([E.RUNNING, E.RETRYING, E.RUNNING], E.RUNNING),
        ([E.RUNNING, E.PAUSED, E.RUNNING], E.RUNNING),
        ([E.RUNNING, E.COMPLETED], E.COMPLETED),
        ([E.RUNNING, E.COMPLETED, E.FAILED], E.COMPLETED),  # terminal never changes
        ([E.RUNNING, E.FAILED, E.RUNNING], E.FAILED),
        ([E.RUNNING, E.CANCELLED, E.COMPLETED], E.CANCELLED),
        ([E.RUNNING, E.PENDING], E.RUNNING),  # never back to pending
        ([E.COMPLETED, E.COMPLETED], E.COMPLETED),  # idempotent
        ([E.PENDING, E.FAILED], E.FAILED),
    ],
)
def test_execution_status_is_monotonic(db: Store, path: list[str], expected: str) -> None:
    execution_id = _execution(db)
    for status in path:
        after = db.transition_execution(execution_id, status)
    assert after.status == expected
    row = db.get_execution(execution_id)
    assert row is not None and row.status == expected
    assert (row.finished_at is not None) == (expected in {E.COMPLETED, E.FAILED, E.CANCELLED})


def test_terminal_error_is_written_once(db: Store) -> None:
    execution_id = _execution(db)
    assert db.transition_execution(execution_id, E.FAILED, error={"code": "FIRST"}).changed
    assert not db.transition_execution(execution_id, E.FAILED, error={"code": "SECOND"}).changed
    assert not db.transition_execution(execution_id, E.COMPLETED, error={"code": "THIRD"}).changed
    row = db.get_execution(execution_id)
    assert row is not None and (row.status, row.error) == (E.FAILED, {"code": "FIRST"})


def test_task_output_is_written_once_and_attempts_only_grow(db: Store) -> None:
    execution_id = _execution(db)
    assert db.start_task_attempt(execution_id, "one", 1).status == T.RUNNING
    assert db.start_task_attempt(execution_id, "one", 3).status == T.RETRYING
    assert db.start_task_attempt(execution_id, "one", 2).attempts == 3
    first = db.complete_task(execution_id, "one", output="first", model="m", attempt=3)
    again = db.complete_task(execution_id, "one", output="second", model="m", attempt=4)
    assert (first.output, again.output, again.attempts, again.status) == ("first", "first", 3, T.COMPLETED)
    # A late attempt of a completed task does not reopen it.
    assert db.start_task_attempt(execution_id, "one", 5).status == T.COMPLETED
    assert db.record_attempt_failure(execution_id, "one", record=_record(attempt=6, code="LATE"), final=True)
    row = db.get_execution(execution_id)
    assert row is not None and row.tasks[0].status == T.COMPLETED and row.tasks[0].error is None
    assert {n: c.raw for n, c in db.context_for(execution_id, ["one", "two"]).items()} == {"one": "first"}


def _record(attempt: int, code: str = "LLM_RATE_LIMITED") -> ErrorRecord:
    return ErrorRecord.from_dict(
        {
            "code": code,
            "category": "rate_limit",
            "severity": "low",
            "retryable": True,
            "message": "m",
            "service": "openai",
            "task": "two",
            "agent": "b",
            "attempt": attempt,
            "category_attempt": attempt,
            "max_attempts": 12,
            "fingerprint": "f" * 16,
            "exception_type": "openai.RateLimitError",
            "stack": "",
            "cause_chain": [{"type": "x", "message": "y"}],
            "occurred_at": "2026-11-29T04:00:00+00:00",
            "attempt_started_at": None,
        }
    )


def test_attempt_failures_become_error_events_once_and_the_last_error_stays_on_the_task(db: Store) -> None:
    execution_id = _execution(db)
    db.start_task_attempt(execution_id, "two", 1)
    assert db.record_attempt_failure(execution_id, "two", record=_record(1, "A"), final=False)
    row = db.get_execution(execution_id)
    assert row is not None and (row.tasks[1].status, row.tasks[1].error["code"]) == (T.RUNNING, "A")
    # The same attempt again (an ambiguous commit retried): no second event, nothing changes.
    assert not db.record_attempt_failure(execution_id, "two", record=_record(1, "A2"), final=True)
    assert db.record_attempt_failure(execution_id, "two", record=_record(2, "B"), final=True)
    row = db.get_execution(execution_id)
    assert row is not None and (row.tasks[1].status, row.tasks[1].error["code"]) == (T.FAILED, "B")
    events = db.list_error_events(execution_id, limit=10, cursor=None).items
    assert [(e.attempt, e.code) for e in events] == [(1, "A"), (2, "B")]
    assert events[0].cause_chain == [{"type": "x", "message": "y"}]


def test_idempotency_key_under_concurrency_creates_one_execution(db: Store) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: _execution(db, key="same"), range(20)))
    assert len(set(ids)) == 1
    page = db.list_executions(status=None, crew_id=None, limit=100, cursor=None)
    assert [e.id for e in page.items] == ids[:1]
    with pytest.raises(IdempotencyKeyReused):
        _execution(db, key="same", body="other")


def test_crew_names_are_unique(db: Store) -> None:
    db.create_crew("alpha", {"name": "alpha"})
    with pytest.raises(CrewNameTaken):
        db.create_crew("alpha", {"name": "alpha"})


def test_pagination_and_cursor_validation(db: Store) -> None:
    ids = {_execution(db) for _ in range(7)}
    seen, cursor = [], None
    while True:
        page = db.list_executions(status=None, crew_id=None, limit=3, cursor=cursor)
        seen += [e.id for e in page.items]
        if not (cursor := page.next_cursor):
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    for bad in ("!!!", "W10", "bm90IGpzb24"):  # not base64, [], "not json"
        with pytest.raises(ValueError):
            decode_cursor(bad)
    with pytest.raises(ValueError):
        db.list_executions(status=None, crew_id=None, limit=3, cursor="WzFd")  # [1]


def test_logs_page_in_order(db: Store) -> None:
    execution_id = _execution(db)
    for i in range(5):
        db.add_log(execution_id, "step", str(i))
    first = db.list_logs(execution_id, limit=3, cursor=None)
    rest = db.list_logs(execution_id, limit=10, cursor=first.next_cursor)
    assert [x.message for x in first.items + rest.items][1:] == ["0", "1", "2", "3", "4"]
    assert rest.next_cursor is None


def test_unstarted_executions_are_found_for_the_reconciler(db: Store) -> None:
    from datetime import timedelta

    from backend.db.models import utcnow

    started, orphan = _execution(db), _execution(db)
    db.set_run_id(started, "run-1")
    found = db.unstarted_executions(before=utcnow() + timedelta(seconds=1), limit=10)
    assert [e.id for e in found] == [orphan]


def test_a_transition_writes_its_log_line_once_even_when_the_commit_is_not_reported(any_db_url: str) -> None:
    db = Store.from_url(any_db_url)
    faults = CommitFaults(db.db)
    eid = _execution(db)
    faults.arm("transition.paused", OperationalError("COMMIT", {}, ConnectionResetError()))
    line = LogLine(
        "execution.paused", "waiting for an operator", "info", {"error": {"code": "LLM_AUTH_FAILED"}}
    )
    with pytest.raises(OperationalError):
        db.transition_execution(eid, E.PAUSED, log=line)  # committed, then "the connection dropped"
    retried = db.transition_execution(eid, E.PAUSED, log=line)  # what the retried activity does
    assert (retried.status, retried.changed) == (E.PAUSED, False)
    logs = db.list_logs(eid, limit=10, cursor=None).items
    assert [(x.event, x.message, x.level, x.data) for x in logs] == [
        ("execution.accepted", "crew c: 2 tasks", "info", None),
        ("execution.paused", "waiting for an operator", "info", {"error": {"code": "LLM_AUTH_FAILED"}}),
    ]
    # A transition the rules refuse writes no line either.
    assert not db.transition_execution(eid, E.PENDING, log=LogLine("execution.pending")).changed
    assert len(db.list_logs(eid, limit=10, cursor=None).items) == 2
