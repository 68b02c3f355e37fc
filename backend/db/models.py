"""ORM models of the backend database (API schemas live in backend/api/schemas.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Crew(Base):
    __tablename__ = "crews"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # "spec": registered through the API; "python": a worker's manifest of a crew in its code.
    source: Mapped[str] = mapped_column(String(16), default="spec")
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RegisteredTool(Base):
    """A tool of a worker's registry (CREWRUN_TOOLS with a ref): the names JSON specs may use."""

    __tablename__ = "registered_tools"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    service: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_status_created", "status", "created_at"),
        Index("ix_executions_crew_created", "crew_id", "created_at"),
        Index("ix_executions_created", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    crew_id: Mapped[str | None] = mapped_column(ForeignKey("crews.id"), nullable=True)
    crew_name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]  # snapshot: later edits of the crew do not change a run
    inputs: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    workflow_id: Mapped[str] = mapped_column(String(200), unique=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    tasks: Mapped[list[TaskRun]] = relationship(
        back_populates="execution", order_by="TaskRun.position", lazy="selectin"
    )


class TaskRun(Base):
    __tablename__ = "task_runs"
    __table_args__ = (UniqueConstraint("execution_id", "name", name="uq_task_runs_execution_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The structured form of the output ({"format": "json"|"pydantic", "json_dict": {...}}) and the
    # file it was written to ({"output_file": "..."}), when the task has them.
    output_data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    degraded: Mapped[bool] = mapped_column(default=False)
    # Human input: how many times a person rejected the output (each rejection runs the task
    # again, revision + 1), and what they said.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    feedback: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # What the task's calls cost, over every attempt (kept when the journal is pruned): tokens,
    # USD, and the USD of calls whose attempt failed and which no later attempt reused.
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    wasted_cost_usd: Mapped[float] = mapped_column(default=0.0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    execution: Mapped[Execution] = relationship(back_populates="tasks")


class ExecutionLog(Base):
    __tablename__ = "execution_logs"
    __table_args__ = (Index("ix_execution_logs_execution", "execution_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(10), default="info")
    event: Mapped[str] = mapped_column(String(100))
    task: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ErrorEvent(Base):
    """One failed attempt of a task: what the API's /errors routes and the analytics read."""

    __tablename__ = "error_events"
    __table_args__ = (
        Index("ix_error_events_execution", "execution_id", "id"),
        Index("ix_error_events_occurred", "occurred_at"),
        Index("ix_error_events_fingerprint", "fingerprint", "occurred_at"),
        Index("ix_error_events_category", "category", "occurred_at"),
        # One event per (task, attempt): a retried write of the same failure is a no-op.
        UniqueConstraint("execution_id", "task", "attempt", name="uq_error_events_attempt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    crew_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    task: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    category_attempt: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    retryable: Mapped[bool] = mapped_column()
    service: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tool: Mapped[str | None] = mapped_column(String(100), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    exception_type: Mapped[str] = mapped_column(String(300))
    fingerprint: Mapped[str] = mapped_column(String(32))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    provider_code: Mapped[str | None] = mapped_column(String(100), nullable=True)
    retry_after_s: Mapped[float | None] = mapped_column(nullable=True)
    next_retry_delay_s: Mapped[float | None] = mapped_column(nullable=True)
    stack: Mapped[str] = mapped_column(Text, default="")
    cause_chain: Mapped[list[Any]]
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempt_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ErrorHourly(Base):
    """Error events counted per hour and group, kept in the transaction that inserts each event:
    what error analytics read for long windows (a month is 720 rows per group, not every event)."""

    __tablename__ = "error_hourly"
    __table_args__ = (
        UniqueConstraint(
            "hour", "fingerprint", "category", "code", "severity", "crew_key", name="uq_error_hourly"
        ),
        Index("ix_error_hourly_hour", "hour"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the start of the hour, UTC
    fingerprint: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    crew_key: Mapped[str] = mapped_column(String(36), default="")  # the crew id, "" for inline crews
    count: Mapped[int] = mapped_column(Integer, default=0)
    # Executions with this group's first event of the hour: summed over hours, an execution that
    # fails the same way in two hours counts twice (see backend/db/analytics.py).
    executions: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sample_message: Mapped[str] = mapped_column(Text)


class CircuitBreakerRow(Base):
    """One breaker per external service, shared by every worker through this row."""

    __tablename__ = "circuit_breakers"

    service: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    probes_in_flight: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[float | None] = mapped_column(nullable=True)  # clock seconds (injectable clock)
    next_probe_at: Mapped[float | None] = mapped_column(nullable=True)
    updated_at: Mapped[float] = mapped_column(default=0.0)


class BreakerCall(Base):
    """The sliding window: outcomes of recent calls that count (transient failures and successes)."""

    __tablename__ = "breaker_calls"
    __table_args__ = (Index("ix_breaker_calls_service_at", "service", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column()
    ok: Mapped[bool] = mapped_column()


class BreakerEvent(Base):
    __tablename__ = "breaker_events"
    __table_args__ = (Index("ix_breaker_events_service", "service", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExecutionFailure(Base):
    """The final error record of a failed or cancelled execution: written once per workflow run."""

    __tablename__ = "execution_failures"
    __table_args__ = (UniqueConstraint("workflow_id", "run_id", name="uq_execution_failures_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_chain: Mapped[list[Any]]  # every attempt's error event of the execution, oldest first
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("workflow_id", "run_id", name="uq_dead_letters_run"),
        Index("ix_dead_letters_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    crew_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    completed_tasks: Mapped[list[Any]]  # [{"name", "agent", "output", "model", "attempts"}]
    inputs: Mapped[dict[str, Any]]
    spec: Mapped[dict[str, Any]]
    spec_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    replayed_execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alert(Base):
    """One alert per incident (after dedup and cooldown), with its delivery status."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_created", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    rule: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str] = mapped_column(Text, default="")
    dedup_key: Mapped[str] = mapped_column(String(300))
    execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sinks: Mapped[list[Any]]  # sink names to deliver to
    delivered_sinks: Mapped[list[Any]]  # sink names that accepted it (a retry skips them)
    delivered: Mapped[bool] = mapped_column(default=False)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AlertDedup(Base):
    """The last time each dedup key fired: one atomic UPDATE decides who raises the alert."""

    __tablename__ = "alert_dedup"

    dedup_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JournalEntry(Base):
    """One LLM or tool call of a task attempt, committed before its response is used. A retried
    attempt is served from here while its requests match (see activities/call_journal.py)."""

    __tablename__ = "call_journal"
    __table_args__ = (
        UniqueConstraint("execution_id", "task", "revision", "attempt", "seq", name="uq_call_journal_call"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)  # the call's place in its attempt
    kind: Mapped[str] = mapped_column(String(8))  # llm | tool
    name: Mapped[str] = mapped_column(String(200))  # the model, or the tool
    service: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))  # of the request, as the service sees it
    outcome: Mapped[str] = mapped_column(String(16))  # ok | replayed | failed
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The answer (JSON: {"type": ..., ...}), redacted; None when it was over the size bound or
    # could not be stored: then only its hash is kept and the call is not replayable.
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response_bytes: Mapped[int] = mapped_column(Integer, default=0)
    replayable: Mapped[bool] = mapped_column(default=False)
    # A replayed call: the live call it was served from (its attempt for the replay chain).
    source_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reused: Mapped[bool] = mapped_column(default=False)  # a later attempt was served this call
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(nullable=True)  # None: no known price
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_ms: Mapped[float] = mapped_column(default=0.0)


class WebhookSubscription(Base):
    """Where an execution's events go: given with the execution (``webhooks``, or CrewAI's
    ``taskWebhookUrl``/``stepWebhookUrl``/``crewWebhookUrl``)."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_execution", "execution_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[Any]]  # event types delivered to it
    format: Mapped[str] = mapped_column(String(16), default="crewrun")  # crewrun | crewai
    # The signing secret, encrypted with the deployment's webhook key (never stored in clear).
    secret_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # CrewAI's kickoff meta
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookEvent(Base):
    """An event waiting for (or done with) delivery to one subscription: written in the same
    transaction as what it reports (an outbox), delivered in ``seq`` order."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_key", name="uq_webhook_events_key"),
        Index("ix_webhook_events_pending", "execution_id", "delivered_at"),
    )

    # The sequence number: increasing in the order events were written (ids of concurrent
    # writers may commit out of order; one execution's events are written one after another).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)  # the receiver dedupes by it
    subscription_id: Mapped[str] = mapped_column(ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    execution_id: Mapped[str] = mapped_column(String(36))
    event_key: Mapped[str] = mapped_column(String(300))  # what it reports, once
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
