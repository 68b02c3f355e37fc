"""Dead letters and final failure records: what the compensation writes once per workflow run,
and what an operator replays or discards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.db import executions, webhooks
from backend.db.executions import LogLine, coalesce
from backend.db.models import Crew, DeadLetter, ErrorEvent, Execution, ExecutionFailure, TaskRun, utcnow
from backend.db.paging import Page, newest_first
from backend.status import TaskStatus, execution_predecessors


class DeadLetterNotOpen(Exception):
    """Replayed or discarded already: a dead letter is acted on once."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Compensation:
    dead_letter_id: str
    created: bool  # False: an earlier (perhaps ambiguous) attempt already wrote it


def compensation_of(s: Session, workflow_id: str, run_id: str) -> Compensation | None:
    found = s.scalar(
        select(DeadLetter.id).where(DeadLetter.workflow_id == workflow_id, DeadLetter.run_id == run_id)
    )
    return Compensation(found, created=False) if found else None


def compensate(
    s: Session,
    *,
    execution_id: str,
    workflow_id: str,
    run_id: str,
    status: str,
    error: dict[str, Any] | None,
    reason: str,
) -> Compensation:
    """The final status, the final error record (the whole chain of the failure) and the dead
    letter with the checkpoint, in the caller's transaction; a second call for the same workflow
    run finds the first one's (an IntegrityError at commit means a concurrent one won)."""
    existing = compensation_of(s, workflow_id, run_id)
    if existing is not None:
        return existing
    dead_letter_id = str(uuid.uuid4())
    now = utcnow()
    execution = s.get(Execution, execution_id)
    if execution is None:
        raise LookupError(f"no execution {execution_id}")
    s.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status.in_(execution_predecessors(status)))
        .values(
            status=status,
            error=error,
            finished_at=now,
            updated_at=now,
            started_at=coalesce(Execution.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(TaskRun)
        .where(
            TaskRun.execution_id == execution_id,
            TaskRun.status.in_([TaskStatus.RUNNING, TaskStatus.RETRYING]),
        )
        .values(status=TaskStatus.FAILED, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    events = s.scalars(
        select(ErrorEvent).where(ErrorEvent.execution_id == execution_id).order_by(ErrorEvent.id)
    )
    chain = [
        {k: getattr(e, k) for k in ("task", "agent", "attempt", "code", "category", "message")}
        | {"occurred_at": e.occurred_at.isoformat()}
        for e in events
    ]
    s.add(
        ExecutionFailure(
            execution_id=execution_id,
            workflow_id=workflow_id,
            run_id=run_id,
            status=status,
            error=error,
            error_chain=chain,
            created_at=now,
        )
    )
    completed = [
        {"name": t.name, "agent": t.agent, "output": t.output, "model": t.model, "attempts": t.attempts}
        | ({"output_data": t.output_data} if t.output_data else {})
        for t in execution.tasks
        if t.status == TaskStatus.COMPLETED
    ]
    crew = s.get(Crew, execution.crew_id) if execution.crew_id else None
    s.add(
        DeadLetter(
            id=dead_letter_id,
            execution_id=execution_id,
            crew_id=execution.crew_id,
            workflow_id=workflow_id,
            run_id=run_id,
            reason=reason[:500],
            error=error,
            completed_tasks=completed,
            inputs=execution.inputs,
            spec=execution.spec,
            spec_version=crew.version if crew else None,
            status="open",
            created_at=now,
            updated_at=now,
        )
    )
    line = LogLine(f"execution.{status}", reason[:500], "error", {"dead_letter_id": dead_letter_id})
    executions.add_log(s, execution_id, line)
    finished = executions.status_event(s, execution_id, status, reason[:500], error)
    finished["dead_letter_id"] = dead_letter_id
    webhooks.emit(s, execution_id, "execution_finished", f"{status}:{run_id}", finished)
    return Compensation(dead_letter_id, created=True)


def get(s: Session, dead_letter_id: str) -> DeadLetter | None:
    return s.get(DeadLetter, dead_letter_id)


def page(s: Session, *, status: str | None, limit: int, cursor: str | None) -> Page[DeadLetter]:
    query = select(DeadLetter)
    if status:
        query = query.where(DeadLetter.status == status)
    return newest_first(s, query, DeadLetter.created_at, DeadLetter.id, limit, cursor)


def failures_of(s: Session, execution_id: str) -> list[ExecutionFailure]:
    return list(s.scalars(select(ExecutionFailure).where(ExecutionFailure.execution_id == execution_id)))


def close(s: Session, dead_letter_id: str, status: str, replayed_execution_id: str | None = None) -> None:
    """Open → ``status``, once; LookupError for an unknown one, DeadLetterNotOpen for a closed one."""
    result = s.execute(
        update(DeadLetter)
        .where(DeadLetter.id == dead_letter_id, DeadLetter.status == "open")
        .values(status=status, replayed_execution_id=replayed_execution_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        current = s.scalar(select(DeadLetter.status).where(DeadLetter.id == dead_letter_id))
        if current is None:
            raise LookupError(dead_letter_id)
        raise DeadLetterNotOpen(current)


def replay(s: Session, dead_letter_id: str, inputs_patch: dict[str, Any]) -> str:
    """A new execution with the dead letter's spec and inputs (patched), whose completed tasks are
    seeded from the checkpoint so they are not run again; closes the dead letter. Returns its id."""
    letter = s.get(DeadLetter, dead_letter_id)
    if letter is None:
        raise LookupError(dead_letter_id)
    done = {t["name"]: t for t in letter.completed_tasks}
    note = f"replay of dead letter {dead_letter_id}: {len(done)} tasks from the checkpoint"
    execution_id = executions.insert(
        s,
        crew_id=letter.crew_id,
        crew_name=letter.spec["name"],
        spec=letter.spec,
        inputs=letter.inputs | inputs_patch,
        seeded=done,
        note=note,
    )
    close(s, dead_letter_id, "replayed", execution_id)
    return execution_id


def count(s: Session, status: str) -> int:
    return int(s.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.status == status)) or 0)
