"""Alerts: the alert rows, the dedup keys that make one incident one alert, and their delivery."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db.database import Database
from backend.db.models import Alert, AlertDedup, ErrorEvent, JournalEntry, utcnow
from backend.db.paging import Page, newest_first


def recent_errors(s: Session, *, since: datetime, category: str | None, code: str | None) -> int:
    query = select(func.count()).select_from(ErrorEvent).where(ErrorEvent.occurred_at >= since)
    if category:
        query = query.where(ErrorEvent.category == category)
    if code:
        query = query.where(ErrorEvent.code == code)
    return int(s.scalar(query) or 0)


def recent_waste(s: Session, *, since: datetime) -> float:
    """USD of live calls since ``since`` whose attempt failed and which no later attempt reused."""
    failed_attempt = (
        select(ErrorEvent.id)
        .where(
            ErrorEvent.execution_id == JournalEntry.execution_id,
            ErrorEvent.task == JournalEntry.task,
            ErrorEvent.attempt == JournalEntry.attempt,
        )
        .exists()
    )
    query = select(func.coalesce(func.sum(JournalEntry.cost_usd), 0.0)).where(
        JournalEntry.started_at >= since,
        JournalEntry.outcome == "ok",
        JournalEntry.reused.is_(False),
        failed_attempt,
    )
    return float(s.scalar(query) or 0.0)


def first_in_cooldown(db: Database, key: str, cooldown_s: float) -> bool:
    """True for exactly one caller per key and cooldown, across processes: an atomic UPDATE of an
    expired key, else the insert of a new one (the loser of a race gets an IntegrityError)."""
    now = utcnow()
    with db.transaction("alert.dedup") as s:
        won = s.execute(
            update(AlertDedup)
            .where(AlertDedup.dedup_key == key, AlertDedup.last_at <= now - timedelta(seconds=cooldown_s))
            .values(last_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    if won:
        return True
    try:
        with db.transaction("alert.dedup") as s:
            s.add(AlertDedup(dedup_key=key, last_at=now))
        return True
    except IntegrityError:
        return False  # the key fired within its cooldown (or a concurrent caller won)


def insert(s: Session, alert: Alert) -> None:
    s.add(alert)


def get(s: Session, alert_id: str) -> Alert | None:
    return s.get(Alert, alert_id)


def page(s: Session, *, since: Any, limit: int, cursor: str | None) -> Page[Alert]:
    query = select(Alert)
    if since is not None:
        query = query.where(Alert.created_at >= since)
    return newest_first(s, query, Alert.created_at, Alert.id, limit, cursor)


def record_delivery(s: Session, alert_id: str, accepted: list[str], failures: list[str]) -> None:
    alert = s.get(Alert, alert_id)
    assert alert is not None
    alert.delivered_sinks = sorted({*alert.delivered_sinks, *accepted})
    alert.delivery_attempts += 1
    alert.last_error = "; ".join(failures) or None
    if not failures:
        alert.delivered, alert.delivered_at = True, utcnow()


def undelivered(s: Session, *, before: datetime, limit: int) -> list[str]:
    query = select(Alert.id).where(Alert.delivered.is_(False), Alert.created_at < before).limit(limit)
    return list(s.scalars(query))
