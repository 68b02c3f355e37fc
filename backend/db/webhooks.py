"""Webhooks of executions: the subscriptions given with an execution, and the outbox of their
events. An event is written in the transaction that makes what it reports true (a task's output,
a status change, a call), so none is lost and none is invented; ``event_key`` names what it
reports, so writing it again (a retried transaction) adds nothing. Delivery reads the outbox in
``id`` order (workflows/webhook_delivery.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from backend.db.models import Execution, WebhookEvent, WebhookSubscription, utcnow
from backend.exceptions.redaction import redact_data
from backend.status import TERMINAL_EXECUTION

EVENT_TYPES: tuple[str, ...] = (
    "task_completed",  # a task's output is the task's (approved, for a human_input task)
    "task_failed",  # a task failed for good (the execution fails, pauses or goes on without it)
    "step",  # an LLM or tool call of a task attempt (what, how long, tokens, cost; never content)
    "awaiting_feedback",  # a human_input task's output waits for a person
    "paused",  # the execution waits for an operator
    "execution_finished",  # completed, degraded, failed or cancelled
)


@dataclass(frozen=True)
class Subscription:
    url: str
    events: tuple[str, ...] = EVENT_TYPES
    secret_ciphertext: str | None = None
    format: str = "crewrun"  # crewrun | crewai
    meta: dict[str, Any] | None = None


def subscribe(s: Session, execution_id: str, subscriptions: list[Subscription]) -> None:
    for sub in subscriptions:
        s.add(
            WebhookSubscription(
                id=str(uuid.uuid4()),
                execution_id=execution_id,
                url=sub.url,
                events=list(sub.events),
                format=sub.format,
                secret_ciphertext=sub.secret_ciphertext,
                meta=sub.meta,
                created_at=utcnow(),
            )
        )


def replace_crewai(s: Session, execution_id: str, subscriptions: list[Subscription]) -> None:
    """CrewAI's /resume names its webhooks again: they replace the execution's CrewAI-format ones."""
    current = s.scalars(
        select(WebhookSubscription).where(
            WebhookSubscription.execution_id == execution_id, WebhookSubscription.format == "crewai"
        )
    )
    wanted = {(sub.url, tuple(sub.events)) for sub in subscriptions}
    kept = set()
    for row in current:
        if (row.url, tuple(row.events)) in wanted:
            kept.add((row.url, tuple(row.events)))
        else:
            s.delete(row)
    subscribe(s, execution_id, [sub for sub in subscriptions if (sub.url, tuple(sub.events)) not in kept])


def emit(s: Session, execution_id: str, event_type: str, key: str, data: dict[str, Any]) -> int:
    """The event for every subscription of the execution that wants it; returns how many."""
    subscriptions = s.execute(
        select(WebhookSubscription.id, WebhookSubscription.events).where(
            WebhookSubscription.execution_id == execution_id
        )
    ).all()
    wanted = [sub_id for sub_id, events in subscriptions if event_type in (events or ())]
    if not wanted:
        return 0
    now = utcnow()
    payload = redact_data(data)
    insert = postgresql_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    for sub_id in wanted:
        s.execute(
            insert(WebhookEvent)
            .values(
                event_id=str(uuid.uuid4()),
                subscription_id=sub_id,
                execution_id=execution_id,
                event_key=f"{event_type}:{key}"[:300],
                type=event_type,
                payload=payload,
                created_at=now,
                attempts=0,
            )
            .on_conflict_do_nothing(index_elements=["subscription_id", "event_key"])
        )
    return len(wanted)


@dataclass(frozen=True)
class Pending:
    event: WebhookEvent
    subscription: WebhookSubscription


def pending(s: Session, execution_id: str, limit: int = 100) -> list[Pending]:
    """Undelivered events of the execution, oldest first."""
    rows = s.execute(
        select(WebhookEvent, WebhookSubscription)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookEvent.subscription_id)
        .where(WebhookEvent.execution_id == execution_id, WebhookEvent.delivered_at.is_(None))
        .order_by(WebhookEvent.id)
        .limit(limit)
    ).all()
    return [Pending(event, sub) for event, sub in rows]


def delivered(s: Session, event_id: int) -> None:
    s.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(delivered_at=utcnow(), attempts=WebhookEvent.attempts + 1, last_error=None)
    )


def refused(s: Session, event_id: int, error: str) -> None:
    s.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(attempts=WebhookEvent.attempts + 1, last_error=error[:2000])
    )


def finished(s: Session, execution_id: str) -> bool:
    """The execution ended and every event of it is delivered: its delivery is over."""
    status = s.scalar(select(Execution.status).where(Execution.id == execution_id))
    if status not in TERMINAL_EXECUTION:
        return False
    waiting = exists().where(WebhookEvent.execution_id == execution_id, WebhookEvent.delivered_at.is_(None))
    return not bool(s.scalar(select(waiting)))


def has_subscriptions(s: Session, execution_id: str) -> bool:
    return bool(s.scalar(select(exists().where(WebhookSubscription.execution_id == execution_id))))


def executions_waiting(s: Session, before: datetime, limit: int) -> list[str]:
    """Executions with an event undelivered since ``before`` (their delivery may have stopped)."""
    rows = s.scalars(
        select(WebhookEvent.execution_id)
        .where(WebhookEvent.delivered_at.is_(None), WebhookEvent.created_at < before)
        .group_by(WebhookEvent.execution_id)
        .limit(limit)
    )
    return list(rows)
