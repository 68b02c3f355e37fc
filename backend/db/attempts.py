"""Task attempts: what one attempt of a crew task reads and writes, in two transactions.

``begin`` (claim the attempt, find an output an earlier attempt already committed, mark the
execution running when the workflow says this is its first task, the log line, the context the
task sees) and, after the crew ran, ``complete`` or ``record_failure`` (output or error event, task
status, log line). The activity adds its circuit-breaker decisions to the same transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from backend.db import executions, webhooks
from backend.db.executions import LogLine, coalesce, greatest
from backend.db.models import ErrorEvent, ErrorHourly, Execution, TaskRun, utcnow
from backend.db.paging import Page, oldest_first
from backend.exceptions.records import ErrorRecord
from backend.status import ExecutionStatus, TaskStatus, task_predecessors


@dataclass(frozen=True)
class ContextOutput:
    """What a task sees of one it depends on: its text, and its structured form when it has one
    (``output_data``: {"format", "json_dict"})."""

    raw: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class AttemptStart:
    task: TaskRun | None  # None: no such task (a bug upstream)
    reused: bool  # an earlier attempt committed the output and died before reporting it
    context: dict[str, ContextOutput]  # the outputs (or gap markers) of the tasks this one depends on


def begin(
    s: Session,
    execution_id: str,
    task: str,
    attempt: int,
    *,
    context_of: Sequence[str],
    started_at: datetime,
    mark_running: bool = False,
    revision: int = 0,
) -> AttemptStart:
    """``revision``: how many times a person rejected this task's output; a new revision runs the
    task again even though an output (the rejected one) is written."""
    status = TaskStatus.RUNNING if attempt <= 1 else TaskStatus.RETRYING
    claimable = TaskRun.status.in_(task_predecessors(status)) | (
        (TaskRun.status == TaskStatus.AWAITING_FEEDBACK) & (TaskRun.revision < revision)
    )
    s.execute(
        update(TaskRun)
        .where(TaskRun.execution_id == execution_id, TaskRun.name == task, claimable)
        .values(
            status=status,
            attempts=greatest(TaskRun.attempts, attempt),
            started_at=coalesce(TaskRun.started_at, utcnow()),
            revision=greatest(TaskRun.revision, revision),
        )
        .execution_options(synchronize_session=False)
    )
    row = _task(s, execution_id, task)
    if row is not None and row.status in (TaskStatus.COMPLETED, TaskStatus.AWAITING_FEEDBACK):
        return AttemptStart(row, reused=True, context={})
    if mark_running:  # the workflow's decision, written with the first task's first claim
        executions.transition(
            s, execution_id, ExecutionStatus.RUNNING, log=LogLine("execution.running", "execution started")
        )
    data = {"attempt": attempt, "attempt_started_at": started_at.isoformat()}
    executions.add_log(s, execution_id, LogLine("task.started", f"attempt {attempt}", task=task, data=data))
    return AttemptStart(row, reused=False, context=context_for(s, execution_id, context_of))


def complete(
    s: Session,
    execution_id: str,
    task: str,
    *,
    output: str,
    model: str | None,
    attempt: int,
    data: dict[str, Any] | None = None,
    awaiting_feedback: bool = False,
    calls: dict[str, int] | None = None,
) -> TaskRun:
    """Write a task's output once. A second call (a retried activity) changes nothing. A
    human_input task's output waits for a person (``awaiting_feedback``) instead of completing."""
    status = TaskStatus.AWAITING_FEEDBACK if awaiting_feedback else TaskStatus.COMPLETED
    written = s.execute(
        update(TaskRun)
        .where(
            TaskRun.execution_id == execution_id,
            TaskRun.name == task,
            TaskRun.status.in_(task_predecessors(status) - {TaskStatus.AWAITING_FEEDBACK}),
        )
        .values(
            status=status,
            output=output,
            output_data=data,
            model=model,  # the last error stays: "completed after 3 attempts, last one 503"
            attempts=greatest(TaskRun.attempts, attempt),
            finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    row = _task(s, execution_id, task)
    assert row is not None
    message = f"{len(row.output or '')} chars from {model}"
    executions.add_log(s, execution_id, LogLine(f"task.{status}", message, data=calls, task=task))
    if written.rowcount:  # type: ignore[attr-defined]
        kind = "awaiting_feedback" if awaiting_feedback else "task_completed"
        webhooks.emit(s, execution_id, kind, f"{task}:{row.revision}", task_event(row))
    return row


def task_event(row: TaskRun) -> dict[str, Any]:
    """What a task's webhook event says about it."""
    data = row.output_data or {}
    return {
        "task": row.name,
        "agent": row.agent,
        "status": row.status,
        "attempts": row.attempts,
        "revision": row.revision,
        "output": row.output,
        "json_dict": data.get("json_dict"),
        "error": {k: (row.error or {}).get(k) for k in ("code", "category", "message")}
        if row.error
        else None,
    }


def record_failure(
    s: Session,
    execution_id: str,
    task: str,
    *,
    record: ErrorRecord,
    final: bool,
    final_status: str = TaskStatus.FAILED,
    log: LogLine | None = None,
) -> bool:
    """The attempt's error event, the task's last error and, if no attempt follows, its final
    status, with ``log``. Returns False when this attempt was recorded already (a retried write
    after an ambiguous commit changes nothing)."""
    already = s.scalar(
        select(ErrorEvent.id).where(
            ErrorEvent.execution_id == execution_id,
            ErrorEvent.task == task,
            ErrorEvent.attempt == record.attempt,
        )
    )
    if already is not None:
        return False
    crew_id = s.scalar(select(Execution.crew_id).where(Execution.id == execution_id))
    event = error_event(execution_id, crew_id, task, record)
    count_hourly(s, event)
    s.add(event)
    values: dict[str, Any] = {"error": record.to_dict()}
    if final:
        values |= {
            "status": final_status,
            "finished_at": utcnow(),
            "degraded": final_status == TaskStatus.DEGRADED,
        }
    s.execute(
        update(TaskRun)
        .where(
            TaskRun.execution_id == execution_id,
            TaskRun.name == task,
            TaskRun.status.in_(task_predecessors(final_status)),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if log is not None:
        executions.add_log(s, execution_id, log)
    if final and (row := _task(s, execution_id, task)) is not None:
        webhooks.emit(s, execution_id, "task_failed", f"{task}:{record.attempt}", task_event(row))
    return True


def count_hourly(s: Session, event: ErrorEvent) -> None:
    """The event's hour in error_hourly, in the event's own transaction (before it is added: its
    execution counts once per hour, group and task, at its first event there; the lookup stays on
    the (execution, task) prefix of uq_error_events_attempt, a few rows whatever the table holds)."""
    at = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    hour = at.replace(minute=0, second=0, microsecond=0)
    earlier = s.scalar(
        select(ErrorEvent.id)
        .where(
            ErrorEvent.execution_id == event.execution_id,
            ErrorEvent.task == event.task,
            ErrorEvent.fingerprint == event.fingerprint,
            ErrorEvent.occurred_at >= hour,
            ErrorEvent.occurred_at < hour + timedelta(hours=1),
        )
        .limit(1)
    )
    fresh = 0 if earlier is not None else 1
    row = {"hour": hour, "fingerprint": event.fingerprint, "category": event.category, "code": event.code,
           "severity": event.severity, "crew_key": event.crew_id or "", "count": 1, "executions": fresh,
           "first_seen": at, "last_seen": at, "sample_message": event.message}  # fmt: skip
    postgres = s.get_bind().dialect.name == "postgresql"
    insert = (postgresql_insert if postgres else sqlite_insert)(ErrorHourly).values(**row)
    smaller, larger = (func.least, func.greatest) if postgres else (func.min, func.max)  # 2-argument min/max
    table = ErrorHourly.__table__.c
    s.execute(
        insert.on_conflict_do_update(
            index_elements=["hour", "fingerprint", "category", "code", "severity", "crew_key"],
            set_={
                "count": table.count + 1,
                "executions": table.executions + fresh,
                "first_seen": smaller(table.first_seen, insert.excluded.first_seen),
                "last_seen": larger(table.last_seen, insert.excluded.last_seen),
                "sample_message": smaller(table.sample_message, insert.excluded.sample_message),
            },
        )
    )


def context_for(s: Session, execution_id: str, tasks: Sequence[str]) -> dict[str, ContextOutput]:
    """What a task sees of the tasks it depends on: their outputs, an operator's stand-in for a
    skipped one, or a clear marker where an optional task left a gap."""
    if not tasks:
        return {}
    rows = s.execute(
        select(TaskRun.name, TaskRun.status, TaskRun.output, TaskRun.output_data, TaskRun.error).where(
            TaskRun.execution_id == execution_id, TaskRun.name.in_(list(tasks))
        )
    ).all()
    found: dict[str, ContextOutput] = {}
    for name, status, output, data, error in rows:
        if status == TaskStatus.COMPLETED:
            found[name] = ContextOutput(output or "", data)
        elif status == TaskStatus.SKIPPED:
            found[name] = ContextOutput(output or f"[no output: task {name} was skipped by an operator]")
        elif status == TaskStatus.DEGRADED:
            code = (error or {}).get("code", "an error")
            found[name] = ContextOutput(
                f"[no output: optional task {name} failed ({code}); continue without it]"
            )
    return found


def decide_feedback(
    s: Session, execution_id: str, task: str, *, revision: int, approve: bool, feedback: str
) -> TaskRun | None:
    """A person's decision on a task awaiting feedback, once per revision: approved, the output
    is the task's; rejected, the feedback is kept with the output it was about, and the task runs
    again (the workflow's next attempt claims revision + 1). A repeated decision changes nothing."""
    row = _task(s, execution_id, task)
    if row is None or row.status != TaskStatus.AWAITING_FEEDBACK or row.revision != revision:
        return row
    entry = {
        "revision": revision,
        "approved": approve,
        "feedback": feedback,
        "output": row.output or "",
        "at": utcnow().isoformat(),
    }
    values: dict[str, Any] = {"feedback": [*(row.feedback or []), entry]}
    if approve:
        values |= {"status": TaskStatus.COMPLETED, "finished_at": utcnow()}
    s.execute(
        update(TaskRun)
        .where(
            TaskRun.id == row.id, TaskRun.status == TaskStatus.AWAITING_FEEDBACK, TaskRun.revision == revision
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    line = LogLine("task.approved" if approve else "task.rejected", feedback[:300], task=task)
    executions.add_log(s, execution_id, line)
    decided = _task(s, execution_id, task)
    if approve and decided is not None:
        webhooks.emit(s, execution_id, "task_completed", f"{task}:{revision}", task_event(decided))
    return decided


def error_events(s: Session, execution_id: str, *, limit: int, cursor: str | None) -> Page[ErrorEvent]:
    query = select(ErrorEvent).where(ErrorEvent.execution_id == execution_id)
    return oldest_first(s, query, ErrorEvent.id, limit, cursor)


def _task(s: Session, execution_id: str, task: str) -> TaskRun | None:
    """The task's row as the database has it now (after an UPDATE this session ran)."""
    return s.scalars(
        select(TaskRun)
        .where(TaskRun.execution_id == execution_id, TaskRun.name == task)
        .execution_options(populate_existing=True)
    ).first()


def error_event(execution_id: str, crew_id: str | None, task: str, r: ErrorRecord) -> ErrorEvent:
    return ErrorEvent(
        execution_id=execution_id,
        crew_id=crew_id,
        task=task,
        agent=r.agent,
        attempt=r.attempt,
        category_attempt=r.category_attempt,
        max_attempts=r.max_attempts,
        code=r.code,
        category=r.category,
        severity=r.severity,
        retryable=r.retryable,
        service=r.service,
        tool=r.tool,
        message=r.message,
        exception_type=r.exception_type,
        fingerprint=r.fingerprint,
        status_code=r.status_code,
        provider_code=r.provider_code,
        retry_after_s=r.retry_after_s,
        next_retry_delay_s=r.next_retry_delay_s,
        stack=r.stack,
        cause_chain=r.cause_chain,
        occurred_at=_parse_time(r.occurred_at) or utcnow(),
        attempt_started_at=_parse_time(r.attempt_started_at),
    )


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None
