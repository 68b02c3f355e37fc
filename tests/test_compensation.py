"""The compensation of a failed or cancelled execution at the store, on SQLite and on the local
PostgreSQL, without a workflow: the final status, the final error record with the chain of every
attempt's error, the dead letter with the checkpoint, written once per workflow run; then what an
operator does with a dead letter (replay it once, or discard it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, update

from backend.db import dead_letters
from backend.db import webhooks as webhook_outbox
from backend.db.dead_letters import Compensation, DeadLetterNotOpen
from backend.db.models import TaskRun, WebhookEvent
from backend.db.store import Store
from backend.exceptions.records import ErrorRecord
from backend.status import ExecutionStatus as E
from backend.status import TaskStatus as T

SPEC = {
    "name": "research",
    "agents": [{"name": "a"}, {"name": "b"}],
    "tasks": [
        {"name": "one", "agent": "a"},
        {"name": "two", "agent": "b"},
        {"name": "three", "agent": "a"},
    ],
}
ERROR = {"code": "TASK_FAILED", "message": "task two failed"}


@pytest.fixture
def store(any_db_url: str) -> Store:
    return Store.from_url(any_db_url)


def record(attempt: int, code: str, occurred_at: str) -> ErrorRecord:
    return ErrorRecord(
        code=code,
        category="rate_limit",
        severity="low",
        retryable=True,
        message=f"{code} at attempt {attempt}",
        task="two",
        agent="b",
        attempt=attempt,
        category_attempt=attempt,
        max_attempts=12,
        fingerprint="f" * 16,
        exception_type="openai.RateLimitError",
        occurred_at=occurred_at,
    )


def failing_execution(
    store: Store,
    *,
    crew: bool = True,
    start: bool = True,
    webhooks: list[webhook_outbox.Subscription] | None = None,
) -> str:
    """Task one completed, task two failed twice and is still retrying, task three never ran."""
    crew_id = store.create_crew("research", SPEC).id if crew else None
    execution, _ = store.create_execution(
        crew_id=crew_id,
        crew_name="research",
        spec=SPEC,
        inputs={"topic": "otters"},
        idempotency_key=None,
        request_hash=None,
        webhooks=webhooks,
    )
    if start:
        store.transition_execution(execution.id, E.RUNNING)
        store.start_task_attempt(execution.id, "one", 1)
        store.complete_task(execution.id, "one", output="otters hold hands", model="gpt-4o", attempt=1)
        store.start_task_attempt(execution.id, "two", 1)
        store.record_attempt_failure(
            execution.id,
            "two",
            record=record(1, "LLM_RATE_LIMITED", "2026-11-29T04:00:00+00:00"),
            final=False,
        )
        store.start_task_attempt(execution.id, "two", 2)
        store.record_attempt_failure(
            execution.id, "two", record=record(2, "LLM_TIMEOUT", "2026-11-29T04:01:00+00:00"), final=False
        )
    return execution.id


def compensate(store: Store, execution_id: str, **changes: Any) -> Compensation:
    fields: dict[str, Any] = {
        "execution_id": execution_id,
        "workflow_id": f"execution-{execution_id}",
        "run_id": "run-1",
        "status": E.FAILED,
        "error": ERROR,
        "reason": "task two failed: LLM_TIMEOUT",
    }
    return store.compensate(**(fields | changes))


def test_compensation_writes_the_final_status_record_and_dead_letter_with_the_checkpoint(
    store: Store,
) -> None:
    execution_id = failing_execution(store)
    started = store.get_execution(execution_id)
    assert started is not None and started.started_at is not None

    done = compensate(store, execution_id)

    assert done.created is True
    execution = store.get_execution(execution_id)
    assert execution is not None
    assert (execution.status, execution.error, execution.started_at) == (E.FAILED, ERROR, started.started_at)
    now = execution.finished_at
    assert now is not None and execution.updated_at == now
    assert [(t.name, t.status, t.finished_at == now) for t in execution.tasks] == [
        ("one", T.COMPLETED, False),
        ("two", T.FAILED, True),
        ("three", T.PENDING, False),
    ]

    (failure,) = store.failures_of(execution_id)
    assert (failure.workflow_id, failure.run_id, failure.status, failure.error, failure.created_at) == (
        f"execution-{execution_id}",
        "run-1",
        E.FAILED,
        ERROR,
        now,
    )
    assert failure.error_chain == [
        {
            "task": "two",
            "agent": "b",
            "attempt": n,
            "code": code,
            "category": "rate_limit",
            "message": f"{code} at attempt {n}",
            "occurred_at": failure.error_chain[n - 1]["occurred_at"],
        }
        for n, code in [(1, "LLM_RATE_LIMITED"), (2, "LLM_TIMEOUT")]
    ]
    assert [c["occurred_at"][:19] for c in failure.error_chain] == [
        "2026-11-29T04:00:00",
        "2026-11-29T04:01:00",
    ]

    letter = store.get_dead_letter(done.dead_letter_id)
    assert letter is not None
    crew = store.crew_by_name("research")
    assert crew is not None
    assert {
        "execution_id": letter.execution_id,
        "crew_id": letter.crew_id,
        "workflow_id": letter.workflow_id,
        "run_id": letter.run_id,
        "reason": letter.reason,
        "error": letter.error,
        "inputs": letter.inputs,
        "spec": letter.spec,
        "spec_version": letter.spec_version,
        "status": letter.status,
        "replayed_execution_id": letter.replayed_execution_id,
    } == {
        "execution_id": execution_id,
        "crew_id": crew.id,
        "workflow_id": f"execution-{execution_id}",
        "run_id": "run-1",
        "reason": "task two failed: LLM_TIMEOUT",
        "error": ERROR,
        "inputs": {"topic": "otters"},
        "spec": SPEC,
        "spec_version": crew.version,
        "status": "open",
        "replayed_execution_id": None,
    }
    assert letter.completed_tasks == [
        {"name": "one", "agent": "a", "output": "otters hold hands", "model": "gpt-4o", "attempts": 1}
    ]
    assert letter.created_at == letter.updated_at == now

    last = store.list_logs(execution_id, limit=100, cursor=None).items[-1]
    assert (last.event, last.message, last.level, last.data) == (
        "execution.failed",
        "task two failed: LLM_TIMEOUT",
        "error",
        {"dead_letter_id": done.dead_letter_id},
    )


def test_compensation_tells_the_executions_webhooks_once_how_it_ended_and_what_it_used(
    store: Store,
) -> None:
    hook = webhook_outbox.Subscription(url="http://receiver.test/hook", events=("execution_finished",))
    deaf = webhook_outbox.Subscription(url="http://receiver.test/tasks", events=("task_completed",))
    execution_id = failing_execution(store, webhooks=[hook, deaf])
    with store.db.transaction("arrange") as s:  # what the call journal would have added up
        for task, tokens_in, tokens_out, cost in [("one", 120, 30, 0.0015), ("two", 80, 0, 0.0004)]:
            s.execute(
                update(TaskRun)
                .where(TaskRun.execution_id == execution_id, TaskRun.name == task)
                .values(tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost)
            )
        s.execute(  # task one's structured output
            update(TaskRun)
            .where(TaskRun.execution_id == execution_id, TaskRun.name == "one")
            .values(output_data={"json_dict": {"species": "sea otter"}})
        )
    error = {
        "code": "LLM_TIMEOUT",
        "category": "timeout",
        "severity": "medium",
        "task": "two",
        "message": "the model did not answer in 60 s",
        "stack": "not for receivers",
    }

    done = compensate(store, execution_id, error=error, reason="x" * 600)
    again = compensate(store, execution_id, error=error, reason="x" * 600)

    assert again.dead_letter_id == done.dead_letter_id
    with store.db.transaction("read") as s:
        events = list(s.scalars(select(WebhookEvent).where(WebhookEvent.execution_id == execution_id)))
    finished = [e for e in events if e.type == "execution_finished"]
    assert [(e.event_key, e.execution_id) for e in finished] == [
        ("execution_finished:failed:run-1", execution_id)
    ]  # one event, for the subscription that asked for it
    assert finished[0].payload == {
        "status": "failed",
        "message": "x" * 500,
        "error": {k: error[k] for k in ("code", "category", "severity", "task", "message")},
        "dead_letter_id": done.dead_letter_id,
        "result": {"raw": "otters hold hands", "json_dict": {"species": "sea otter"}},
        "token_usage": {"prompt_tokens": 200, "completion_tokens": 30, "total_tokens": 230},
        "cost_usd": 0.0019,
    }
    letter = store.get_dead_letter(done.dead_letter_id)  # the checkpoint keeps the structured output
    assert letter is not None and letter.completed_tasks == [
        {
            "name": "one",
            "agent": "a",
            "output": "otters hold hands",
            "model": "gpt-4o",
            "attempts": 1,
            "output_data": {"json_dict": {"species": "sea otter"}},
        }
    ]
    others = {e.type for e in events if e.subscription_id != finished[0].subscription_id}
    assert others == {"task_completed"}  # the tasks-only subscription heard of task one only


def test_a_second_compensation_of_the_same_run_finds_the_first_and_writes_nothing(store: Store) -> None:
    execution_id = failing_execution(store)
    first = compensate(store, execution_id)
    logs = len(store.list_logs(execution_id, limit=100, cursor=None).items)

    again = compensate(store, execution_id, status=E.CANCELLED, error={"code": "OTHER"}, reason="again")

    assert again == Compensation(first.dead_letter_id, created=False)
    execution = store.get_execution(execution_id)
    assert execution is not None and (execution.status, execution.error) == (E.FAILED, ERROR)
    assert len(store.failures_of(execution_id)) == 1
    assert store.count_dead_letters("open") == 1
    assert len(store.list_logs(execution_id, limit=100, cursor=None).items) == logs


def test_a_second_compensation_in_the_callers_transaction_finds_the_first(store: Store) -> None:
    execution_id = failing_execution(store)
    fields: dict[str, Any] = {
        "execution_id": execution_id,
        "workflow_id": "wf",
        "run_id": "run-1",
        "status": E.FAILED,
        "error": ERROR,
        "reason": "failed",
    }

    with store.db.transaction("compensate") as s:
        first = dead_letters.compensate(s, **fields)
        again = dead_letters.compensate(s, **fields)

    assert again == Compensation(first.dead_letter_id, created=False)
    assert len(store.failures_of(execution_id)) == 1


def test_each_run_of_a_workflow_is_compensated_once(store: Store) -> None:
    execution_id = failing_execution(store)

    first = compensate(store, execution_id, run_id="run-1")
    reset = compensate(store, execution_id, run_id="run-2")  # the workflow reset, and failed again

    assert reset.created and reset.dead_letter_id != first.dead_letter_id
    assert sorted(f.run_id for f in store.failures_of(execution_id)) == ["run-1", "run-2"]


def test_compensating_an_execution_leaves_every_other_execution_alone(store: Store) -> None:
    other = failing_execution(store, crew=False)
    execution_id = failing_execution(store, crew=False)

    compensate(store, execution_id)

    untouched = store.get_execution(other)
    assert untouched is not None and (untouched.status, untouched.error, untouched.finished_at) == (
        E.RUNNING,
        None,
        None,
    )
    assert [t.status for t in untouched.tasks] == [T.COMPLETED, T.RETRYING, T.PENDING]


def test_concurrent_compensations_of_one_run_write_one_dead_letter(store: Store) -> None:
    execution_id = failing_execution(store)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: compensate(store, execution_id), range(8)))

    assert len({r.dead_letter_id for r in results}) == 1
    assert [r.created for r in results].count(True) == 1
    assert len(store.failures_of(execution_id)) == 1


def test_an_execution_that_never_started_is_compensated_as_started_when_it_ended(store: Store) -> None:
    execution_id = failing_execution(store, crew=False, start=False)

    done = compensate(store, execution_id, status=E.CANCELLED, error=None, reason="cancelled by operator")

    execution = store.get_execution(execution_id)
    assert execution is not None
    assert (execution.status, execution.error) == (E.CANCELLED, None)
    assert execution.started_at is not None and execution.started_at == execution.finished_at
    letter = store.get_dead_letter(done.dead_letter_id)
    assert letter is not None
    assert (letter.crew_id, letter.spec_version, letter.completed_tasks, letter.error) == (
        None,
        None,
        [],
        None,
    )
    assert store.failures_of(execution_id)[0].error_chain == []
    assert store.list_logs(execution_id, limit=100, cursor=None).items[-1].event == "execution.cancelled"


def test_a_finished_execution_keeps_its_status_and_first_error(store: Store) -> None:
    execution_id = failing_execution(store)
    store.transition_execution(execution_id, E.COMPLETED)

    compensate(store, execution_id)

    execution = store.get_execution(execution_id)
    assert execution is not None and (execution.status, execution.error) == (E.COMPLETED, None)


def test_a_long_reason_is_cut_at_500_characters(store: Store) -> None:
    execution_id = failing_execution(store)

    done = compensate(store, execution_id, reason="r" * 600)

    letter = store.get_dead_letter(done.dead_letter_id)
    assert letter is not None and letter.reason == "r" * 500
    assert store.list_logs(execution_id, limit=100, cursor=None).items[-1].message == "r" * 500


def test_compensating_an_unknown_execution_is_a_lookup_error(store: Store) -> None:
    with pytest.raises(LookupError, match="^no execution missing$"):
        compensate(store, "missing")


# --- what an operator does with a dead letter --------------------------------------------------------


def test_a_replay_runs_a_new_execution_seeded_with_the_checkpoint_and_closes_the_letter(store: Store) -> None:
    execution_id = failing_execution(store)
    letter_id = compensate(store, execution_id).dead_letter_id

    replayed = store.replay_dead_letter(letter_id, {"depth": 2})

    assert replayed.id != execution_id
    assert (replayed.status, replayed.spec, replayed.inputs) == (
        E.PENDING,
        SPEC,
        {"topic": "otters", "depth": 2},
    )
    assert [(t.name, t.status, t.output, t.model) for t in replayed.tasks] == [
        ("one", T.COMPLETED, "otters hold hands", "gpt-4o"),
        ("two", T.PENDING, None, None),
        ("three", T.PENDING, None, None),
    ]
    (accepted,) = store.list_logs(replayed.id, limit=10, cursor=None).items
    assert accepted.message == f"replay of dead letter {letter_id}: 1 tasks from the checkpoint"
    crew = store.crew_by_name("research")
    assert crew is not None and replayed.crew_id == crew.id
    letter = store.get_dead_letter(letter_id)
    assert letter is not None and (letter.status, letter.replayed_execution_id) == ("replayed", replayed.id)
    assert letter.updated_at > letter.created_at
    assert (store.count_dead_letters("open"), store.count_dead_letters("replayed")) == (0, 1)


def test_a_dead_letter_is_acted_on_once(store: Store) -> None:
    replayed = compensate(store, failing_execution(store)).dead_letter_id
    discarded = compensate(store, failing_execution(store, crew=False)).dead_letter_id
    store.replay_dead_letter(replayed, {})
    assert store.discard_dead_letter(discarded).status == "discarded"

    for letter_id, status in [(replayed, "replayed"), (discarded, "discarded")]:
        with pytest.raises(DeadLetterNotOpen) as refused:
            store.discard_dead_letter(letter_id)
        assert refused.value.status == status and str(refused.value) == status
        with pytest.raises(DeadLetterNotOpen):
            store.replay_dead_letter(letter_id, {})
    for act in (store.discard_dead_letter, lambda x: store.replay_dead_letter(x, {})):
        with pytest.raises(LookupError, match="^missing$"):
            act("missing")
    closed = store.get_dead_letter(discarded)
    assert closed is not None and closed.updated_at > closed.created_at
    assert store.get_dead_letter("missing") is None


def test_dead_letters_are_listed_newest_first_by_status_a_page_at_a_time(store: Store) -> None:
    letters = [compensate(store, failing_execution(store, crew=False)).dead_letter_id for _ in range(3)]
    store.discard_dead_letter(letters[0])

    first = store.list_dead_letters(status=None, limit=2, cursor=None)
    rest = store.list_dead_letters(status=None, limit=2, cursor=first.next_cursor)
    still_open = store.list_dead_letters(status="open", limit=10, cursor=None)

    assert [d.id for d in first.items + rest.items] == letters[::-1]
    assert rest.next_cursor is None
    assert [d.id for d in still_open.items] == letters[:0:-1]
    assert (store.count_dead_letters("open"), store.count_dead_letters("discarded")) == (2, 1)
