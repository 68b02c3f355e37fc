"""The store: the aggregate functions (crews, executions, attempts, dead letters) as one-call
units of work, each in a transaction of its own, for callers that do one thing at a time (the
API's routes, the status activities, tests). A caller that must combine writes opens one
transaction on :attr:`Store.db` and calls the aggregate functions itself (the task attempt does).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.db import alerts, attempts, crews, dead_letters, executions, journal
from backend.db import webhooks as webhook_outbox
from backend.db.crews import CrewNameTaken
from backend.db.database import Database
from backend.db.dead_letters import Compensation, DeadLetterNotOpen
from backend.db.executions import IdempotencyKeyReused, LogLine, Transition, workflow_id_for
from backend.db.models import (
    Crew,
    DeadLetter,
    ErrorEvent,
    Execution,
    ExecutionFailure,
    ExecutionLog,
    JournalEntry,
    RegisteredTool,
    TaskRun,
)
from backend.db.paging import Page, decode_cursor
from backend.exceptions.records import ErrorRecord
from backend.status import TaskStatus

__all__ = [
    "Compensation",
    "CrewNameTaken",
    "DeadLetterNotOpen",
    "IdempotencyKeyReused",
    "LogLine",
    "Page",
    "Store",
    "Transition",
    "decode_cursor",
    "workflow_id_for",
]


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(Database.from_url(url))

    # ----- crews

    def create_crew(self, name: str, spec: dict[str, Any]) -> Crew:
        try:
            with self.db.transaction("create_crew") as s:
                return crews.create(s, name, spec)
        except IntegrityError as exc:
            raise CrewNameTaken(name) from exc

    def get_crew(self, crew_id: str) -> Crew | None:
        with self.db.read() as s:
            return crews.get(s, crew_id)

    def list_crews(self, *, limit: int, cursor: str | None) -> Page[Crew]:
        with self.db.read() as s:
            return crews.page(s, limit=limit, cursor=cursor)

    def crew_by_name(self, name: str) -> Crew | None:
        with self.db.read() as s:
            return crews.by_name(s, name)

    def register_python_crew(self, name: str, spec: dict[str, Any]) -> Crew:
        """Raises CrewNameTaken when a JSON crew has the name. Two workers registering the same
        new crew at once: the second insert fails on the name, and its retry finds the row."""
        for attempt in range(2):
            try:
                with self.db.transaction("register_crew") as s:
                    return crews.register_python(s, name, spec)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def register_tools(self, tools: list[tuple[str, str, str]]) -> None:
        """(name, service, description) of each tool of a worker's registry."""
        with self.db.transaction("register_tools") as s:
            for name, service, description in tools:
                crews.register_tool(s, name, service, description)

    def registered_tools(self) -> list[RegisteredTool]:
        with self.db.read() as s:
            return crews.tools(s)

    def registered_tool_names(self) -> set[str]:
        with self.db.read() as s:
            return crews.tool_names(s)

    # ----- executions

    def create_execution(
        self,
        *,
        crew_id: str | None,
        crew_name: str,
        spec: dict[str, Any],
        inputs: dict[str, Any],
        idempotency_key: str | None,
        request_hash: str | None,
        webhooks: list[webhook_outbox.Subscription] | None = None,
    ) -> tuple[Execution, bool]:
        """Insert a pending execution (with its webhook subscriptions); returns (execution,
        created). Same key → same execution."""
        if idempotency_key and (existing := self._by_key(idempotency_key, request_hash)) is not None:
            return existing, False
        try:
            with self.db.transaction("create_execution") as s:
                execution_id = executions.insert(
                    s,
                    crew_id=crew_id,
                    crew_name=crew_name,
                    spec=spec,
                    inputs=inputs,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                )
                webhook_outbox.subscribe(s, execution_id, webhooks or [])
        except IntegrityError:
            # A concurrent request with the same key won the insert: answer with its execution.
            if idempotency_key and (existing := self._by_key(idempotency_key, request_hash)) is not None:
                return existing, False
            raise
        fresh = self.get_execution(execution_id)
        assert fresh is not None
        return fresh, True

    def _by_key(self, key: str, request_hash: str | None) -> Execution | None:
        with self.db.read() as s:
            return executions.by_idempotency_key(s, key, request_hash)

    def get_execution(self, execution_id: str) -> Execution | None:
        with self.db.read() as s:
            return executions.get(s, execution_id)

    def list_executions(
        self,
        *,
        status: str | None,
        crew_id: str | None,
        limit: int,
        cursor: str | None,
        crew_name: str | None = None,
        error_category: str | None = None,
    ) -> Page[Execution]:
        with self.db.read() as s:
            return executions.page(
                s,
                status=status,
                crew_id=crew_id,
                limit=limit,
                cursor=cursor,
                crew_name=crew_name,
                error_category=error_category,
            )

    def unstarted_executions(self, *, before: datetime, limit: int) -> list[Execution]:
        with self.db.read() as s:
            return executions.unstarted(s, before=before, limit=limit)

    def set_run_id(self, execution_id: str, run_id: str) -> None:
        with self.db.transaction("set_run_id") as s:
            executions.set_run_id(s, execution_id, run_id)

    def transition_execution(
        self,
        execution_id: str,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        log: LogLine | None = None,
    ) -> Transition:
        with self.db.transaction(f"transition.{status}") as s:
            return executions.transition(s, execution_id, status, error=error, log=log)

    def count_executions(self, status: str) -> int:
        with self.db.read() as s:
            return executions.count(s, status)

    # ----- tasks and the log

    def start_task_attempt(self, execution_id: str, task: str, attempt: int) -> TaskRun | None:
        """Claim attempt ``attempt`` of a task (the first half of a task attempt, without context)."""
        with self.db.transaction("begin_attempt") as s:
            start = attempts.begin(s, execution_id, task, attempt, context_of=(), started_at=datetime.now())
            return start.task

    def complete_task(
        self, execution_id: str, task: str, *, output: str, model: str | None, attempt: int
    ) -> TaskRun:
        with self.db.transaction("finish_attempt") as s:
            return attempts.complete(s, execution_id, task, output=output, model=model, attempt=attempt)

    def record_attempt_failure(
        self,
        execution_id: str,
        task: str,
        *,
        record: ErrorRecord,
        final: bool,
        final_status: str = TaskStatus.FAILED,
    ) -> bool:
        with self.db.transaction("finish_attempt") as s:
            return attempts.record_failure(
                s, execution_id, task, record=record, final=final, final_status=final_status
            )

    def context_for(self, execution_id: str, tasks: Sequence[str]) -> dict[str, attempts.ContextOutput]:
        with self.db.read() as s:
            return attempts.context_for(s, execution_id, tasks)

    def decide_feedback(
        self, execution_id: str, task: str, *, revision: int, approve: bool, feedback: str
    ) -> TaskRun | None:
        with self.db.transaction("decide_feedback") as s:
            return attempts.decide_feedback(
                s, execution_id, task, revision=revision, approve=approve, feedback=feedback
            )

    def list_steps(self, execution_id: str, *, limit: int, cursor: str | None) -> Page[JournalEntry]:
        with self.db.read() as s:
            return journal.steps(s, execution_id, limit=limit, cursor=cursor)

    # ----- webhooks

    def pending_webhooks(self, execution_id: str) -> list[webhook_outbox.Pending]:
        with self.db.read() as s:
            found = webhook_outbox.pending(s, execution_id)
            s.expunge_all()  # read after the session ends
            return found

    def webhook_delivered(self, event_id: int) -> None:
        with self.db.transaction("webhook.delivered") as s:
            webhook_outbox.delivered(s, event_id)

    def webhook_refused(self, event_id: int, error: str) -> None:
        with self.db.transaction("webhook.refused") as s:
            webhook_outbox.refused(s, event_id, error)

    def webhook_delivery_finished(self, execution_id: str) -> bool:
        with self.db.read() as s:
            return webhook_outbox.finished(s, execution_id)

    def executions_with_waiting_webhooks(self, *, before: datetime, limit: int) -> list[str]:
        with self.db.read() as s:
            return webhook_outbox.executions_waiting(s, before, limit)

    def has_webhooks(self, execution_id: str) -> bool:
        with self.db.read() as s:
            return webhook_outbox.has_subscriptions(s, execution_id)

    def replace_crewai_webhooks(
        self, execution_id: str, subscriptions: list[webhook_outbox.Subscription]
    ) -> None:
        with self.db.transaction("webhook.subscribe") as s:
            webhook_outbox.replace_crewai(s, execution_id, subscriptions)

    def execution_cost(self, execution_id: str) -> float:
        with self.db.read() as s:
            rows = list(s.scalars(select(TaskRun).where(TaskRun.execution_id == execution_id)))
            return float(journal.totals(rows)["cost_usd"])

    def prune_journal(self, finished_before: datetime) -> int:
        with self.db.transaction("prune_journal") as s:
            return journal.prune(s, finished_before)

    def list_error_events(self, execution_id: str, *, limit: int, cursor: str | None) -> Page[ErrorEvent]:
        with self.db.read() as s:
            return attempts.error_events(s, execution_id, limit=limit, cursor=cursor)

    def skip_task(self, execution_id: str, task: str, output: str | None) -> None:
        with self.db.transaction("skip_task") as s:
            executions.skip_task(s, execution_id, task, output)

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
        with self.db.transaction("add_log") as s:
            executions.add_log(s, execution_id, LogLine(event, message, level, data, task))

    def list_logs(self, execution_id: str, *, limit: int, cursor: str | None) -> Page[ExecutionLog]:
        with self.db.read() as s:
            return executions.logs(s, execution_id, limit=limit, cursor=cursor)

    # ----- compensation and dead letters

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
        """Once per workflow run, whatever retries and races (see dead_letters.compensate)."""
        try:
            with self.db.transaction("compensate") as s:
                return dead_letters.compensate(
                    s,
                    execution_id=execution_id,
                    workflow_id=workflow_id,
                    run_id=run_id,
                    status=status,
                    error=error,
                    reason=reason,
                )
        except IntegrityError:
            with self.db.read() as s:  # a concurrent attempt of the same compensation committed first
                found = dead_letters.compensation_of(s, workflow_id, run_id)
            if found is None:
                raise
            return found

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        with self.db.read() as s:
            return dead_letters.get(s, dead_letter_id)

    def list_dead_letters(self, *, status: str | None, limit: int, cursor: str | None) -> Page[DeadLetter]:
        with self.db.read() as s:
            return dead_letters.page(s, status=status, limit=limit, cursor=cursor)

    def failures_of(self, execution_id: str) -> list[ExecutionFailure]:
        with self.db.read() as s:
            return dead_letters.failures_of(s, execution_id)

    def discard_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        with self.db.transaction("discard_dead_letter") as s:
            dead_letters.close(s, dead_letter_id, "discarded")
        found = self.get_dead_letter(dead_letter_id)
        assert found is not None
        return found

    def replay_dead_letter(self, dead_letter_id: str, inputs_patch: dict[str, Any]) -> Execution:
        with self.db.transaction("replay_dead_letter") as s:
            execution_id = dead_letters.replay(s, dead_letter_id, inputs_patch)
        found = self.get_execution(execution_id)
        assert found is not None
        return found

    def count_dead_letters(self, status: str) -> int:
        with self.db.read() as s:
            return dead_letters.count(s, status)

    # ----- the rest

    def undelivered_alerts(self, *, before: datetime, limit: int) -> list[str]:
        with self.db.read() as s:
            return alerts.undelivered(s, before=before, limit=limit)

    def ping(self) -> None:
        with self.db.read() as s:
            s.execute(select(1))
