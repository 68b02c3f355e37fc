"""Executions, their task runs and their log: the aggregate the workflow's activities and the API
write together.

Writers that may run twice (activity retries, a worker killed after its commit, two API requests
with one Idempotency-Key) make the second run a no-op: status changes are conditional
``UPDATE ... WHERE status IN (allowed predecessors)``, atomic, idempotent and monotonic on SQLite
and PostgreSQL alike; executions are unique by workflow id and by Idempotency-Key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from backend.db import webhooks
from backend.db.models import ErrorEvent, Execution, ExecutionLog, TaskRun, utcnow
from backend.db.paging import Page, newest_first, oldest_first
from backend.status import (
    TERMINAL_EXECUTION,
    ExecutionStatus,
    TaskStatus,
    execution_predecessors,
    task_predecessors,
)


class IdempotencyKeyReused(Exception):
    """The key was used before with a different request body."""


@dataclass(frozen=True)
class Transition:
    status: str | None  # None: no such execution
    changed: bool


@dataclass(frozen=True)
class LogLine:
    """An execution log line, written in the transaction of the change it describes."""

    event: str
    message: str = ""
    level: str = "info"
    data: dict[str, Any] | None = None
    task: str | None = None

    def row(self, execution_id: str, at: datetime) -> ExecutionLog:
        return ExecutionLog(
            execution_id=execution_id,
            event=self.event,
            message=self.message,
            level=self.level,
            task=self.task,
            data=self.data,
            at=at,
        )


def workflow_id_for(execution_id: str) -> str:
    """Business key: one workflow per execution, so a duplicate start cannot run it twice."""
    return f"crew-execution-{execution_id}"


def coalesce(column: Any, value: Any) -> Any:
    return func.coalesce(column, value)


def greatest(column: Any, value: int) -> Any:
    # GREATEST() does not exist on SQLite; CASE works everywhere.
    return case((column > value, column), else_=value)


# ----- executions


def by_idempotency_key(s: Session, key: str, request_hash: str | None) -> Execution | None:
    found = s.scalars(select(Execution).where(Execution.idempotency_key == key)).first()
    if found is not None and request_hash and found.request_hash != request_hash:
        raise IdempotencyKeyReused(key)
    return found


def insert(
    s: Session,
    *,
    crew_id: str | None,
    crew_name: str,
    spec: dict[str, Any],
    inputs: dict[str, Any],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    seeded: dict[str, dict[str, Any]] | None = None,
    note: str | None = None,
) -> str:
    """A pending execution with one task run per task (``seeded`` ones already completed, from a
    dead letter's checkpoint) and its first log line; returns its id."""
    execution_id = str(uuid.uuid4())
    now = utcnow()
    s.add(
        Execution(
            id=execution_id,
            crew_id=crew_id,
            crew_name=crew_name,
            spec=spec,
            inputs=inputs,
            status=ExecutionStatus.PENDING,
            workflow_id=workflow_id_for(execution_id),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            created_at=now,
            updated_at=now,
        )
    )
    s.flush()
    seeded = seeded or {}
    tasks = spec.get("tasks", [])
    for position, task in enumerate(tasks):
        done = seeded.get(task["name"])
        s.add(
            TaskRun(
                execution_id=execution_id,
                name=task["name"],
                agent=task["agent"],
                position=position,
                status=TaskStatus.COMPLETED if done else TaskStatus.PENDING,
                attempts=0,
                output=done["output"] if done else None,
                output_data=done.get("output_data") if done else None,  # a structured output too
                model=done["model"] if done else None,
            )
        )
    s.add(
        LogLine("execution.accepted", note or f"crew {crew_name}: {len(tasks)} tasks").row(execution_id, now)
    )
    return execution_id


def get(s: Session, execution_id: str) -> Execution | None:
    return s.get(Execution, execution_id)


def page(
    s: Session,
    *,
    status: str | None,
    crew_id: str | None,
    limit: int,
    cursor: str | None,
    crew_name: str | None = None,
    error_category: str | None = None,
) -> Page[Execution]:
    query = select(Execution)
    # As the API shows them: "retrying" is running with its current task on a retry.
    retrying = select(TaskRun.id).where(
        TaskRun.execution_id == Execution.id, TaskRun.status == TaskStatus.RETRYING
    )
    if status == ExecutionStatus.RETRYING:
        query = query.where(Execution.status == ExecutionStatus.RUNNING, retrying.exists())
    elif status == ExecutionStatus.RUNNING:
        query = query.where(Execution.status == ExecutionStatus.RUNNING, ~retrying.exists())
    elif status:
        query = query.where(Execution.status == status)
    if crew_id:
        query = query.where(Execution.crew_id == crew_id)
    if crew_name:  # inline crews have no crew id, only the name of their spec
        query = query.where(Execution.crew_name == crew_name)
    if error_category:
        # Any failed attempt of that category, also one a later attempt recovered from: what an
        # operator looking at, say, rate limits wants to see.
        query = query.where(
            select(ErrorEvent.id)
            .where(ErrorEvent.execution_id == Execution.id, ErrorEvent.category == error_category)
            .exists()
        )
    return newest_first(s, query, Execution.created_at, Execution.id, limit, cursor)


def unstarted(s: Session, *, before: datetime, limit: int) -> list[Execution]:
    """Pending executions that never got a workflow run (see backend/reconciler.py)."""
    query = (
        select(Execution)
        .where(
            Execution.status == ExecutionStatus.PENDING,
            Execution.run_id.is_(None),
            Execution.created_at < before,
        )
        .order_by(Execution.created_at)
        .limit(limit)
    )
    return list(s.scalars(query))


def set_run_id(s: Session, execution_id: str, run_id: str) -> None:
    s.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.run_id.is_(None))
        .values(run_id=run_id)
    )


def transition(
    s: Session,
    execution_id: str,
    status: str,
    *,
    error: dict[str, Any] | None = None,
    log: LogLine | None = None,
) -> Transition:
    """Move an execution to ``status`` if allowed; says what it has afterwards and whether this
    call changed it (a retried write reports ``changed=False``). ``log`` is written only by the
    call that changes the status: once, even when a commit succeeds and its caller never learns
    it (the retry finds the status already there)."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status != ExecutionStatus.PENDING:
        values["started_at"] = coalesce(Execution.started_at, now)
    if status in TERMINAL_EXECUTION:
        values["finished_at"] = coalesce(Execution.finished_at, now)
        if error is not None:
            values["error"] = error
    allowed = Execution.status.in_(execution_predecessors(status))
    result = s.execute(
        update(Execution)
        .where(Execution.id == execution_id, allowed, Execution.status != status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    current = s.scalar(select(Execution.status).where(Execution.id == execution_id))
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    if changed and log is not None:
        s.add(log.row(execution_id, now))
    if changed and status in STATUS_EVENTS:
        data = status_event(s, execution_id, status, log.message if log else "", error)
        webhooks.emit(s, execution_id, STATUS_EVENTS[status], f"{status}:{now.isoformat()}", data)
    return Transition(current, changed)


# The status changes a webhook subscriber hears about (a failure and a cancellation are reported
# by the compensation, with the final record; a wait for feedback by the task, with its output).
STATUS_EVENTS: dict[str, str] = {
    ExecutionStatus.PAUSED: "paused",
    ExecutionStatus.COMPLETED: "execution_finished",
    ExecutionStatus.DEGRADED: "execution_finished",
}


def outcome_summary(s: Session, execution_id: str) -> dict[str, Any]:
    """What an ended execution's webhook says of its result: the last task's output, as CrewAI's
    CrewOutput has it, and what the calls used."""
    rows = list(
        s.scalars(select(TaskRun).where(TaskRun.execution_id == execution_id).order_by(TaskRun.position))
    )
    done = [r for r in rows if r.status in (TaskStatus.COMPLETED, TaskStatus.SKIPPED) and r.output]
    last = done[-1] if done else None
    tokens_in, tokens_out = sum(r.tokens_in for r in rows), sum(r.tokens_out for r in rows)
    return {
        "result": {"raw": last.output, "json_dict": (last.output_data or {}).get("json_dict")}
        if last
        else None,
        "token_usage": {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        },
        "cost_usd": round(sum(r.cost_usd for r in rows), 8),
    }


def status_event(
    s: Session, execution_id: str, status: str, message: str, error: dict[str, Any] | None
) -> dict[str, Any]:
    """What a webhook event of a status change says: the status, why, the error's summary, and for
    an ended execution its outcome (the compensation adds its dead letter)."""
    summary = (
        {k: error.get(k) for k in ("code", "category", "severity", "task", "message")} if error else None
    )
    data = {"status": status, "message": message, "error": summary}
    if status in TERMINAL_EXECUTION:
        data |= outcome_summary(s, execution_id)
    return data


def count(s: Session, status: str) -> int:
    return int(s.scalar(select(func.count()).select_from(Execution).where(Execution.status == status)) or 0)


# ----- task runs and the log


def skip_task(s: Session, execution_id: str, task: str, output: str | None) -> None:
    s.execute(
        update(TaskRun)
        .where(
            TaskRun.execution_id == execution_id,
            TaskRun.name == task,
            TaskRun.status.in_(task_predecessors(TaskStatus.SKIPPED)),
        )
        .values(status=TaskStatus.SKIPPED, output=output, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    note = "skipped by an operator" + (" with a stand-in output" if output else "")
    s.add(LogLine("task.skipped", note, task=task).row(execution_id, utcnow()))


def add_log(s: Session, execution_id: str, line: LogLine) -> None:
    s.add(line.row(execution_id, utcnow()))


def logs(s: Session, execution_id: str, *, limit: int, cursor: str | None) -> Page[ExecutionLog]:
    query = select(ExecutionLog).where(ExecutionLog.execution_id == execution_id)
    return oldest_first(s, query, ExecutionLog.id, limit, cursor)
