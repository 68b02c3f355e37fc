"""The call journal: every LLM and tool call of a task attempt, and the tape a retried attempt is
served from.

A *tape* is what a new attempt may replay: the calls an earlier attempt of the same task (and
human-input revision) made successfully, in order, up to its first failed call. It comes from the
latest earlier attempt; when that one stopped (a crash, a failure outside any call) while it was
still being served from an older attempt's calls, the older attempt's remaining calls follow, since
it had not left that history. A dead letter's replay starts from the tape of the execution it
replays.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from backend.db import webhooks
from backend.db.models import DeadLetter, ErrorEvent, Execution, JournalEntry, TaskRun
from backend.db.paging import Page, oldest_first


@dataclass(frozen=True)
class TapeEntry:
    source_id: int  # the live call whose answer is served
    source_attempt: int
    kind: str
    name: str
    fingerprint: str
    response: str  # JSON, see activities/call_journal.py
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class Tape:
    entries: list[TapeEntry]
    execution_bytes: int  # response bytes the execution's journal holds already
    webhooks: bool = False  # the execution has webhook subscriptions (steps may be events)


def tape(s: Session, execution_id: str, task: str, revision: int, before_attempt: int) -> Tape:
    rows = _rows(s, execution_id, task, revision, before_attempt)
    if not rows and revision == 0:
        replayed = s.scalar(
            select(DeadLetter.execution_id).where(DeadLetter.replayed_execution_id == execution_id)
        )
        if replayed is not None:  # a dead letter's replay: the calls of the execution it replays
            rows = _rows(s, replayed, task, 0, 1 << 30)
    by_attempt: dict[int, list[JournalEntry]] = defaultdict(list)
    for row in rows:
        by_attempt[row.attempt].append(row)
    used = s.scalar(
        select(func.coalesce(func.sum(JournalEntry.response_bytes), 0)).where(
            JournalEntry.execution_id == execution_id
        )
    )
    hooked = webhooks.has_subscriptions(s, execution_id)
    if not by_attempt:
        return Tape([], int(used or 0), hooked)
    chain = _chain(by_attempt, max(by_attempt), 0)
    sources = {r.id: r for r in rows}
    missing = {e.source_id or e.id for e in chain} - set(sources)
    if missing:
        sources |= {r.id: r for r in s.scalars(select(JournalEntry).where(JournalEntry.id.in_(missing)))}
    entries = []
    for row in chain:
        source = sources[row.source_id or row.id]
        if source.response is None or not source.replayable:
            break
        entries.append(
            TapeEntry(
                source_id=source.id,
                source_attempt=source.attempt,
                kind=source.kind,
                name=source.name,
                fingerprint=source.fingerprint,
                response=source.response,
                tokens_in=source.tokens_in,
                tokens_out=source.tokens_out,
            )
        )
    return Tape(entries, int(used or 0), hooked)


def _rows(s: Session, execution_id: str, task: str, revision: int, before_attempt: int) -> list[JournalEntry]:
    return list(
        s.scalars(
            select(JournalEntry)
            .where(
                JournalEntry.execution_id == execution_id,
                JournalEntry.task == task,
                JournalEntry.revision == revision,
                JournalEntry.attempt < before_attempt,
            )
            .order_by(JournalEntry.attempt, JournalEntry.seq)
        )
    )


def _chain(by_attempt: dict[int, list[JournalEntry]], attempt: int, start: int) -> list[JournalEntry]:
    """Attempt ``attempt``'s successful calls from position ``start``, continued into the attempt
    it was being served from if it stopped while still being served."""
    calls = by_attempt.get(attempt, [])
    prefix: list[JournalEntry] = []
    for row in calls:
        if row.outcome == "failed" or row.seq != len(prefix):
            break
        prefix.append(row)
    found = prefix[start:]
    last = prefix[-1] if prefix else None
    stopped_while_served = last is not None and len(prefix) == len(calls) and last.outcome == "replayed"
    if stopped_while_served and last is not None and last.source_attempt in by_attempt:
        found += _chain(by_attempt, int(last.source_attempt or 0), len(prefix))
    return found


# A live call's record, as Core statements built once (see record).
_ENTRIES = cast(Table, JournalEntry.__table__)
_TASKS = cast(Table, TaskRun.__table__)
_ADD_USAGE = (
    _TASKS.update()
    .where(_TASKS.c.execution_id == bindparam("of_execution"), _TASKS.c.name == bindparam("of_task"))
    .values(
        tokens_in=_TASKS.c.tokens_in + bindparam("add_in"),
        tokens_out=_TASKS.c.tokens_out + bindparam("add_out"),
        cost_usd=_TASKS.c.cost_usd + bindparam("add_cost"),
    )
)


def record(s: Session, entry: JournalEntry, *, webhook_events: bool = True) -> None:
    """One call, with the task's totals: a live call adds its tokens and cost; a replayed one marks
    its source reused, and what was counted as wasted when the source's attempt failed is not.
    ``webhook_events``: the execution has subscriptions (known at the attempt's start: a call
    does not look them up again)."""
    if s.get_bind().dialect.name == "postgresql":
        # The journal is a record of calls a retry may reuse: a PostgreSQL crash in the next few
        # milliseconds may lose the last one (it is paid for again), a worker crash loses nothing.
        # Not waiting for the WAL flush takes most of a call's overhead off (BENCHMARKS.md).
        s.execute(text("SET LOCAL synchronous_commit TO OFF"))
    # Core statements built once, not session.add and ORM updates: a call's record is on the path
    # of every LLM and tool call, and the ORM's flush and statement building were most of its
    # Python time (BENCHMARKS.md section 7). Nothing reads the row back in this transaction.
    s.execute(
        _ENTRIES.insert(),
        {c.key: value for c in _ENTRIES.columns if (value := getattr(entry, c.key)) is not None},
    )
    if webhook_events:
        key = f"{entry.task}:{entry.revision}:{entry.attempt}:{entry.seq}"
        webhooks.emit(s, entry.execution_id, "step", key, step_event(entry))
    _count_totals(s, entry)


def _count_totals(s: Session, entry: JournalEntry) -> None:
    if entry.outcome == "ok":
        s.execute(
            _ADD_USAGE,
            {
                "of_execution": entry.execution_id,
                "of_task": entry.task,
                "add_in": entry.tokens_in,
                "add_out": entry.tokens_out,
                "add_cost": entry.cost_usd or 0.0,
            },
        )
    elif entry.outcome == "replayed" and entry.source_id is not None:
        first_reuse = s.execute(
            update(JournalEntry)
            .where(JournalEntry.id == entry.source_id, JournalEntry.reused.is_(False))
            .values(reused=True)
        )
        source = s.get(JournalEntry, entry.source_id)
        if first_reuse.rowcount and source is not None and _attempt_failed(s, source):  # type: ignore[attr-defined]
            s.execute(
                update(TaskRun)
                .where(TaskRun.execution_id == entry.execution_id, TaskRun.name == entry.task)
                .values(wasted_cost_usd=TaskRun.wasted_cost_usd - (source.cost_usd or 0.0))
            )


def step_event(entry: JournalEntry) -> dict[str, Any]:
    """What a step's webhook event says: the call, never its content."""
    return {
        "task": entry.task,
        "attempt": entry.attempt,
        "revision": entry.revision,
        "seq": entry.seq,
        "kind": entry.kind,
        "name": entry.name,
        "service": entry.service,
        "outcome": entry.outcome,
        "replayed": entry.outcome == "replayed",
        "error_code": entry.error_code,
        "tokens_in": entry.tokens_in,
        "tokens_out": entry.tokens_out,
        "cost_usd": entry.cost_usd,
        "duration_ms": entry.duration_ms,
    }


def count_wasted(s: Session, execution_id: str, task: str, revision: int, attempt: int) -> None:
    """An attempt failed: what its live calls cost is wasted unless a later attempt reuses them."""
    wasted = s.scalar(
        select(func.coalesce(func.sum(JournalEntry.cost_usd), 0.0)).where(
            JournalEntry.execution_id == execution_id,
            JournalEntry.task == task,
            JournalEntry.revision == revision,
            JournalEntry.attempt == attempt,
            JournalEntry.outcome == "ok",
            JournalEntry.reused.is_(False),
        )
    )
    if wasted:
        s.execute(
            update(TaskRun)
            .where(TaskRun.execution_id == execution_id, TaskRun.name == task)
            .values(wasted_cost_usd=TaskRun.wasted_cost_usd + wasted)
        )


def _attempt_failed(s: Session, entry: JournalEntry) -> bool:
    found = s.scalar(
        select(ErrorEvent.id).where(
            ErrorEvent.execution_id == entry.execution_id,
            ErrorEvent.task == entry.task,
            ErrorEvent.attempt == entry.attempt,
        )
    )
    return found is not None


def steps(s: Session, execution_id: str, *, limit: int, cursor: str | None) -> Page[JournalEntry]:
    query = select(JournalEntry).where(JournalEntry.execution_id == execution_id)
    return oldest_first(s, query, JournalEntry.id, limit, cursor)


def prune(s: Session, finished_before: datetime) -> int:
    """Journal rows of executions that finished before the cutoff (their totals stay on the tasks)."""
    done = select(Execution.id).where(
        Execution.finished_at.is_not(None), Execution.finished_at < finished_before
    )
    result = s.execute(delete(JournalEntry).where(JournalEntry.execution_id.in_(done)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def totals(rows: list[TaskRun]) -> dict[str, Any]:
    return {
        "tokens_in": sum(r.tokens_in for r in rows),
        "tokens_out": sum(r.tokens_out for r in rows),
        "cost_usd": round(sum(r.cost_usd for r in rows), 8),
        "wasted_cost_usd": round(sum(r.wasted_cost_usd for r in rows), 8),
    }
