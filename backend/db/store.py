"""The store: every read and write of the backend database, as short transactions.

Writers that may run twice (activity retries, a worker killed after its commit, two API requests
with one Idempotency-Key) are written so the second run is a no-op:

- status changes are conditional ``UPDATE ... WHERE status IN (allowed predecessors)``, so they are
  atomic, idempotent and monotonic on SQLite and PostgreSQL alike;
- a task's output is written once; later attempts read it back instead of calling the LLM again;
- executions are unique by workflow id and by Idempotency-Key.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from backend.db.faults import DbFaults
from backend.db.models import (
    Alert,
    Crew,
    DeadLetter,
    ErrorEvent,
    Execution,
    ExecutionFailure,
    ExecutionLog,
    TaskRun,
    utcnow,
)
from backend.status import (
    TERMINAL_EXECUTION,
    ExecutionStatus,
    TaskStatus,
    execution_predecessors,
    task_predecessors,
)


class CrewNameTaken(Exception):
    pass


class DeadLetterNotOpen(Exception):
    """Replayed or discarded already: a dead letter is acted on once."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Compensation:
    dead_letter_id: str
    created: bool  # False: an earlier (perhaps ambiguous) attempt already wrote it


class IdempotencyKeyReused(Exception):
    """The key was used before with a different request body."""


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class Transition:
    status: str | None  # None: no such execution
    changed: bool


@dataclass(frozen=True)
class LogLine:
    """An execution log line written together with the change it describes."""

    event: str
    message: str = ""
    level: str = "info"
    data: dict[str, Any] | None = None
    task: str | None = None

    def row(self, execution_id: str, at: datetime) -> ExecutionLog:
        return ExecutionLog(execution_id=execution_id, event=self.event, message=self.message,
                            level=self.level, task=self.task, data=self.data, at=at)  # fmt: skip


def workflow_id_for(execution_id: str) -> str:
    """Business key: one workflow per execution, so a duplicate start cannot run it twice."""
    return f"crew-execution-{execution_id}"


def _encode_cursor(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """Raises ValueError on a cursor this store did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(parts, list) or not parts:
        raise ValueError("invalid cursor")
    return parts


class Store:
    def __init__(self, session_factory: sessionmaker[Session], *, faults: DbFaults | None = None) -> None:
        self._sessions = session_factory
        self._faults = faults or DbFaults()

    @property
    def sessions(self) -> sessionmaker[Session]:
        """For components that keep tables of their own in the same database (the breaker)."""
        return self._sessions

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # ----- crews -----

    def create_crew(self, name: str, spec: dict[str, Any]) -> Crew:
        crew = Crew(id=str(uuid.uuid4()), name=name, spec=spec, version=1, created_at=utcnow())
        try:
            with self._tx() as s:
                s.add(crew)
        except IntegrityError as exc:
            raise CrewNameTaken(name) from exc
        return crew

    def get_crew(self, crew_id: str) -> Crew | None:
        with self._sessions() as s:
            return s.get(Crew, crew_id)

    def list_crews(self, *, limit: int, cursor: str | None) -> Page[Crew]:
        query = select(Crew)
        return self.page(query, Crew.created_at, Crew.id, limit, cursor)

    # ----- executions -----

    def create_execution(
        self,
        *,
        crew_id: str | None,
        crew_name: str,
        spec: dict[str, Any],
        inputs: dict[str, Any],
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> tuple[Execution, bool]:
        """Insert a pending execution; returns (execution, created). Same key → same execution."""
        if idempotency_key:
            existing = self._by_idempotency_key(idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        execution_id = str(uuid.uuid4())
        now = utcnow()
        execution = Execution(
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
        tasks = spec.get("tasks", [])
        try:
            with self._tx() as s:
                s.add(execution)
                s.flush()
                for position, task in enumerate(tasks):
                    s.add(
                        TaskRun(
                            execution_id=execution_id,
                            name=task["name"],
                            agent=task["agent"],
                            position=position,
                            status=TaskStatus.PENDING,
                            attempts=0,
                        )
                    )
                s.add(
                    ExecutionLog(
                        execution_id=execution_id,
                        event="execution.accepted",
                        message=f"crew {crew_name}: {len(tasks)} tasks",
                        at=now,
                    )
                )
        except IntegrityError:
            # A concurrent request with the same key won the insert: answer with its execution.
            if idempotency_key:
                existing = self._by_idempotency_key(idempotency_key, request_hash)
                if existing is not None:
                    return existing, False
            raise
        fresh = self.get_execution(execution_id)
        assert fresh is not None
        return fresh, True

    def _by_idempotency_key(self, key: str, request_hash: str | None) -> Execution | None:
        with self._sessions() as s:
            found = s.scalars(select(Execution).where(Execution.idempotency_key == key)).first()
        if found is not None and request_hash and found.request_hash != request_hash:
            raise IdempotencyKeyReused(key)
        return found

    def get_execution(self, execution_id: str) -> Execution | None:
        with self._sessions() as s:
            return s.get(Execution, execution_id)

    def list_executions(
        self, *, status: str | None, crew_id: str | None, limit: int, cursor: str | None
    ) -> Page[Execution]:
        query = select(Execution)
        if status:
            query = query.where(Execution.status == status)
        if crew_id:
            query = query.where(Execution.crew_id == crew_id)
        return self.page(query, Execution.created_at, Execution.id, limit, cursor)

    def unstarted_executions(self, *, before: datetime, limit: int) -> list[Execution]:
        """Pending executions that never got a workflow run (see backend/reconciler.py)."""
        with self._sessions() as s:
            return list(
                s.scalars(
                    select(Execution)
                    .where(
                        Execution.status == ExecutionStatus.PENDING,
                        Execution.run_id.is_(None),
                        Execution.created_at < before,
                    )
                    .order_by(Execution.created_at)
                    .limit(limit)
                )
            )

    def set_run_id(self, execution_id: str, run_id: str) -> None:
        with self._tx() as s:
            s.execute(
                update(Execution)
                .where(Execution.id == execution_id, Execution.run_id.is_(None))
                .values(run_id=run_id)
            )

    def transition_execution(
        self,
        execution_id: str,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        log: LogLine | None = None,
    ) -> Transition:
        """Move an execution to ``status`` if allowed; says what it has afterwards and whether
        this call changed it (a retried write reports ``changed=False``). ``log`` is written in the
        same transaction, only by the call that changes the status: once, even when a commit
        succeeds and its caller never learns it (the retry finds the status already there)."""
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if status != ExecutionStatus.PENDING:
            values["started_at"] = _coalesce(Execution.started_at, now)
        if status in TERMINAL_EXECUTION:
            values["finished_at"] = _coalesce(Execution.finished_at, now)
            if error is not None:
                values["error"] = error
        with self._tx() as s:
            result = s.execute(
                update(Execution)
                .where(
                    Execution.id == execution_id,
                    Execution.status.in_(execution_predecessors(status)),
                    Execution.status != status,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            current = s.scalar(select(Execution.status).where(Execution.id == execution_id))
            changed = bool(result.rowcount)  # type: ignore[attr-defined]
            if changed and log is not None:
                s.add(log.row(execution_id, now))
        self._faults.check(f"transition.{status}.after_commit")
        return Transition(current, changed)

    # ----- task runs -----

    def start_task_attempt(self, execution_id: str, task: str, attempt: int) -> TaskRun | None:
        """Record that attempt ``attempt`` of a task began; returns the row (None if unknown)."""
        status = TaskStatus.RUNNING if attempt <= 1 else TaskStatus.RETRYING
        now = utcnow()
        with self._tx() as s:
            s.execute(
                update(TaskRun)
                .where(
                    TaskRun.execution_id == execution_id,
                    TaskRun.name == task,
                    TaskRun.status.in_(task_predecessors(status)),
                )
                .values(
                    status=status,
                    attempts=_greatest(TaskRun.attempts, attempt),
                    started_at=_coalesce(TaskRun.started_at, now),
                )
                .execution_options(synchronize_session=False)
            )
            return s.scalars(
                select(TaskRun).where(TaskRun.execution_id == execution_id, TaskRun.name == task)
            ).first()

    def complete_task(
        self, execution_id: str, task: str, *, output: str, model: str | None, attempt: int
    ) -> TaskRun:
        """Write a task's output once. A second call (a retried activity) changes nothing."""
        with self._tx() as s:
            s.execute(
                update(TaskRun)
                .where(
                    TaskRun.execution_id == execution_id,
                    TaskRun.name == task,
                    TaskRun.status.in_(task_predecessors(TaskStatus.COMPLETED)),
                )
                .values(
                    status=TaskStatus.COMPLETED,
                    output=output,
                    model=model,  # the last error stays: "completed after 3 attempts, last one 503"
                    attempts=_greatest(TaskRun.attempts, attempt),
                    finished_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            row = s.scalars(
                select(TaskRun).where(TaskRun.execution_id == execution_id, TaskRun.name == task)
            ).one()
        # After the commit: the point where a worker dying (or a dropped connection) leaves the
        # output written but the attempt unreported; the next attempt must reuse it.
        self._faults.check("complete_task.after_commit")
        return row

    def record_attempt_failure(
        self,
        execution_id: str,
        task: str,
        *,
        record: dict[str, Any],
        final: bool,
        final_status: str = TaskStatus.FAILED,
    ) -> bool:
        """In one transaction: the attempt's error event, the task's last error and, if no attempt
        follows, the task's ``failed`` status. Returns False when this attempt was already recorded
        (a retried write after an ambiguous commit changes nothing)."""
        with self._tx() as s:
            already = s.scalar(
                select(ErrorEvent.id).where(
                    ErrorEvent.execution_id == execution_id,
                    ErrorEvent.task == task,
                    ErrorEvent.attempt == record["attempt"],
                )
            )
            if already is not None:
                return False
            crew_id = s.scalar(select(Execution.crew_id).where(Execution.id == execution_id))
            s.add(_error_event(execution_id, crew_id, task, record))
            values: dict[str, Any] = {"error": record}
            if final:
                values |= {"status": final_status, "finished_at": utcnow(),
                           "degraded": final_status == TaskStatus.DEGRADED}  # fmt: skip
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
        return True

    def list_error_events(self, execution_id: str, *, limit: int, cursor: str | None) -> Page[ErrorEvent]:
        query = select(ErrorEvent).where(ErrorEvent.execution_id == execution_id)
        return self._page_by_id(query, ErrorEvent.id, limit, cursor)

    def context_for(self, execution_id: str, tasks: Sequence[str]) -> dict[str, str]:
        """What a task sees of the tasks it depends on: their outputs, an operator's stand-in for
        a skipped one, or a clear marker where an optional task left a gap."""
        if not tasks:
            return {}
        with self._sessions() as s:
            rows = s.execute(
                select(TaskRun.name, TaskRun.status, TaskRun.output, TaskRun.error).where(
                    TaskRun.execution_id == execution_id, TaskRun.name.in_(list(tasks))
                )
            ).all()
        found: dict[str, str] = {}
        for name, status, output, error in rows:
            if status == TaskStatus.COMPLETED:
                found[name] = output or ""
            elif status == TaskStatus.SKIPPED:
                found[name] = output or f"[no output: task {name} was skipped by an operator]"
            elif status == TaskStatus.DEGRADED:
                code = (error or {}).get("code", "an error")
                found[name] = f"[no output: optional task {name} failed ({code}); continue without it]"
        return found

    def skip_task(self, execution_id: str, task: str, output: str | None) -> None:
        with self._tx() as s:
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
            s.add(ExecutionLog(execution_id=execution_id, event="task.skipped", task=task, at=utcnow(),
                               message="skipped by an operator" + (" with a stand-in output" if output else "")))  # fmt: skip

    # ----- compensation and dead letters -----

    def compensate(
        self,
        *,
        execution_id: str,
        workflow_id: str,
        run_id: str,
        status: str,
        error: dict[str, Any] | None,
        reason: str,
    ) -> Compensation:
        """The final status, the final error record (the whole chain of the failure) and the dead
        letter with the checkpoint, in one transaction, once per workflow run."""
        existing = self._compensation_of(workflow_id, run_id)
        if existing is not None:
            return existing
        dead_letter_id = str(uuid.uuid4())
        now = utcnow()
        try:
            with self._tx() as s:
                execution = s.get(Execution, execution_id)
                if execution is None:
                    raise LookupError(f"no execution {execution_id}")
                s.execute(
                    update(Execution)
                    .where(Execution.id == execution_id, Execution.status.in_(execution_predecessors(status)))
                    .values(status=status, error=error, finished_at=now, updated_at=now,
                            started_at=_coalesce(Execution.started_at, now))
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                s.execute(
                    update(TaskRun)
                    .where(TaskRun.execution_id == execution_id,
                           TaskRun.status.in_([TaskStatus.RUNNING, TaskStatus.RETRYING]))
                    .values(status=TaskStatus.FAILED, finished_at=now)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                chain = [
                    {k: getattr(e, k) for k in ("task", "agent", "attempt", "code", "category", "message")}
                    | {"occurred_at": e.occurred_at.isoformat()}
                    for e in s.scalars(
                        select(ErrorEvent)
                        .where(ErrorEvent.execution_id == execution_id)
                        .order_by(ErrorEvent.id)
                    )
                ]
                s.add(ExecutionFailure(execution_id=execution_id, workflow_id=workflow_id, run_id=run_id,
                                       status=status, error=error, error_chain=chain, created_at=now))  # fmt: skip
                completed = [
                    {
                        "name": t.name,
                        "agent": t.agent,
                        "output": t.output,
                        "model": t.model,
                        "attempts": t.attempts,
                    }
                    for t in execution.tasks
                    if t.status == TaskStatus.COMPLETED
                ]
                crew = s.get(Crew, execution.crew_id) if execution.crew_id else None
                s.add(
                    DeadLetter(
                        id=dead_letter_id, execution_id=execution_id, crew_id=execution.crew_id,
                        workflow_id=workflow_id, run_id=run_id, reason=reason[:500], error=error,
                        completed_tasks=completed, inputs=execution.inputs, spec=execution.spec,
                        spec_version=crew.version if crew else None, status="open",
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                s.add(ExecutionLog(execution_id=execution_id, event=f"execution.{status}", level="error",
                                   message=reason[:500], data={"dead_letter_id": dead_letter_id}, at=now))  # fmt: skip
        except IntegrityError:
            # A concurrent attempt of the same compensation committed first.
            found = self._compensation_of(workflow_id, run_id)
            if found is None:
                raise
            return found
        self._faults.check("compensate.after_commit")
        return Compensation(dead_letter_id, created=True)

    def _compensation_of(self, workflow_id: str, run_id: str) -> Compensation | None:
        with self._sessions() as s:
            found = s.scalar(
                select(DeadLetter.id).where(
                    DeadLetter.workflow_id == workflow_id, DeadLetter.run_id == run_id
                )
            )
        return Compensation(found, created=False) if found else None

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        with self._sessions() as s:
            return s.get(DeadLetter, dead_letter_id)

    def list_dead_letters(self, *, status: str | None, limit: int, cursor: str | None) -> Page[DeadLetter]:
        query = select(DeadLetter)
        if status:
            query = query.where(DeadLetter.status == status)
        return self.page(query, DeadLetter.created_at, DeadLetter.id, limit, cursor)

    def failures_of(self, execution_id: str) -> list[ExecutionFailure]:
        with self._sessions() as s:
            return list(
                s.scalars(select(ExecutionFailure).where(ExecutionFailure.execution_id == execution_id))
            )

    def discard_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        self._close_dead_letter(dead_letter_id, "discarded", None)
        found = self.get_dead_letter(dead_letter_id)
        assert found is not None
        return found

    def replay_dead_letter(self, dead_letter_id: str, inputs_patch: dict[str, Any]) -> Execution:
        """A new execution with the dead letter's spec and inputs (patched), whose completed tasks
        are seeded from the checkpoint, so they are not run again. Once per dead letter."""
        letter = self.get_dead_letter(dead_letter_id)
        if letter is None:
            raise LookupError(dead_letter_id)
        execution_id = str(uuid.uuid4())
        now = utcnow()
        done = {t["name"]: t for t in letter.completed_tasks}
        with self._tx() as s:
            self._close_dead_letter(dead_letter_id, "replayed", execution_id, session=s)
            s.add(
                Execution(
                    id=execution_id, crew_id=letter.crew_id, crew_name=letter.spec["name"], spec=letter.spec,
                    inputs=letter.inputs | inputs_patch, status=ExecutionStatus.PENDING,
                    workflow_id=workflow_id_for(execution_id), created_at=now, updated_at=now,
                )
            )  # fmt: skip
            s.flush()
            for position, task in enumerate(letter.spec["tasks"]):
                seeded = done.get(task["name"])
                s.add(
                    TaskRun(
                        execution_id=execution_id, name=task["name"], agent=task["agent"], position=position,
                        status=TaskStatus.COMPLETED if seeded else TaskStatus.PENDING,
                        attempts=0, output=seeded["output"] if seeded else None,
                        model=seeded["model"] if seeded else None,
                    )
                )  # fmt: skip
            s.add(ExecutionLog(execution_id=execution_id, event="execution.accepted", at=now,
                               message=f"replay of dead letter {dead_letter_id}: {len(done)} tasks from the checkpoint"))  # fmt: skip
        found = self.get_execution(execution_id)
        assert found is not None
        return found

    def _close_dead_letter(
        self,
        dead_letter_id: str,
        status: str,
        replayed_execution_id: str | None,
        session: Session | None = None,
    ) -> None:
        def run(s: Session) -> None:
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

        if session is not None:
            run(session)
            return
        with self._tx() as s:
            run(s)

    # ----- logs -----

    def add_log(
        self,
        execution_id: str,
        event: str,
        message: str = "",
        *,
        level: str = "info",
        task: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as s:
            s.add(LogLine(event, message, level, data, task).row(execution_id, utcnow()))

    def list_logs(self, execution_id: str, *, limit: int, cursor: str | None) -> Page[ExecutionLog]:
        query = select(ExecutionLog).where(ExecutionLog.execution_id == execution_id)
        return self._page_by_id(query, ExecutionLog.id, limit, cursor)

    def undelivered_alerts(self, *, before: datetime, limit: int) -> list[str]:
        with self._sessions() as s:
            return list(
                s.scalars(
                    select(Alert.id).where(Alert.delivered.is_(False), Alert.created_at < before).limit(limit)
                )
            )

    # ----- counts for metrics -----

    def count_executions(self, status: str) -> int:
        with self._sessions() as s:
            return int(
                s.scalar(select(func.count()).select_from(Execution).where(Execution.status == status)) or 0
            )

    def count_dead_letters(self, status: str) -> int:
        with self._sessions() as s:
            return int(
                s.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.status == status)) or 0
            )

    # ----- health -----

    def ping(self) -> None:
        with self._sessions() as s:
            s.execute(select(1))

    # ----- helpers -----

    def _page_by_id(self, query: Select[Any], id_col: Any, limit: int, cursor: str | None) -> Page[Any]:
        """Oldest first, for append-only tables (logs, error events)."""
        if cursor:
            (after,) = decode_cursor(cursor)[:1]
            if not isinstance(after, int):
                raise ValueError("invalid cursor")
            query = query.where(id_col > after)
        with self._sessions() as s:
            rows = list(s.scalars(query.order_by(id_col).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, _encode_cursor(rows[-1].id) if more else None)

    def page(
        self, query: Select[Any], created_col: Any, id_col: Any, limit: int, cursor: str | None
    ) -> Page[Any]:
        if cursor:
            parts = decode_cursor(cursor)
            if len(parts) != 2 or not isinstance(parts[0], str) or not isinstance(parts[1], str | int):
                raise ValueError("invalid cursor")
            created = datetime.fromisoformat(parts[0])
            query = query.where(or_(created_col < created, and_(created_col == created, id_col < parts[1])))
        query = query.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)
        with self._sessions() as s:
            rows = list(s.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        if not more:
            return Page(rows, None)
        last = rows[-1]
        return Page(rows, _encode_cursor(getattr(last, created_col.key), getattr(last, id_col.key)))


def _coalesce(column: Any, value: Any) -> Any:
    return func.coalesce(column, value)


def _greatest(column: Any, value: int) -> Any:
    # GREATEST() does not exist on SQLite; CASE works everywhere.
    return case((column > value, column), else_=value)


def _error_event(execution_id: str, crew_id: str | None, task: str, r: dict[str, Any]) -> ErrorEvent:
    return ErrorEvent(
        execution_id=execution_id,
        crew_id=crew_id,
        task=task,
        agent=r["agent"],
        attempt=r["attempt"],
        category_attempt=r["category_attempt"],
        max_attempts=r["max_attempts"],
        code=r["code"],
        category=r["category"],
        severity=r["severity"],
        retryable=r["retryable"],
        service=r.get("service"),
        message=r["message"],
        exception_type=r["exception_type"],
        fingerprint=r["fingerprint"],
        status_code=r.get("status_code"),
        provider_code=r.get("provider_code"),
        retry_after_s=r.get("retry_after_s"),
        next_retry_delay_s=r.get("next_retry_delay_s"),
        stack=r.get("stack", ""),
        cause_chain=r.get("cause_chain", []),
        occurred_at=_parse_time(r.get("occurred_at")) or utcnow(),
        attempt_started_at=_parse_time(r.get("attempt_started_at")),
    )


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None
