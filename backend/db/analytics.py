"""Error analytics over the error events: filtered lists, groups by fingerprint, trends per time
bucket. Aggregation runs in the database (GROUP BY over indexed columns), never in Python, so
it stays fast with a million events; bucketing uses each dialect's own epoch arithmetic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.orm import Session

from backend.db.database import Database
from backend.db.models import ErrorEvent
from backend.db.paging import Page, newest_first

_INTERVAL = re.compile(r"^(\d{1,4})(m|h|d)$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


def interval_seconds(interval: str) -> int:
    """``15m``, ``1h``, ``1d`` → seconds (one minute to 30 days); ValueError otherwise."""
    found = _INTERVAL.match(interval)
    if not found:
        raise ValueError("interval must look like 5m, 1h or 1d")
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
    if not 60 <= seconds <= 30 * 86400:
        raise ValueError("interval must be between 1m and 30d")
    return seconds


@dataclass(frozen=True)
class ErrorFilter:
    category: str | None = None
    severity: str | None = None
    code: str | None = None
    crew_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, query: Any) -> Any:  # a Select of any row shape
        for column, value in (
            (ErrorEvent.category, self.category),
            (ErrorEvent.severity, self.severity),
            (ErrorEvent.code, self.code),
            (ErrorEvent.crew_id, self.crew_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(ErrorEvent.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(ErrorEvent.occurred_at < self.until)
        return query


@dataclass(frozen=True)
class ErrorGroup:
    fingerprint: str
    category: str
    code: str
    severity: str
    count: int
    executions: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str


@dataclass(frozen=True)
class TrendPoint:
    bucket_start: datetime
    category: str
    count: int


class ErrorAnalytics:
    def __init__(self, db: Database) -> None:
        self._db = db

    def errors(self, where: ErrorFilter, *, limit: int, cursor: str | None) -> Page[ErrorEvent]:
        """Newest first."""
        with self._db.read() as s:
            query = where.apply(select(ErrorEvent))
            return newest_first(s, query, ErrorEvent.occurred_at, ErrorEvent.id, limit, cursor)

    def groups(self, where: ErrorFilter, *, limit: int) -> list[ErrorGroup]:
        count = func.count().label("count")
        query = where.apply(
            select(
                ErrorEvent.fingerprint,
                ErrorEvent.category,
                ErrorEvent.code,
                ErrorEvent.severity,
                count,
                func.count(func.distinct(ErrorEvent.execution_id)),
                func.min(ErrorEvent.occurred_at),
                func.max(ErrorEvent.occurred_at),
                func.min(ErrorEvent.message),
            )
        ).group_by(ErrorEvent.fingerprint, ErrorEvent.category, ErrorEvent.code, ErrorEvent.severity)
        with self._db.read() as s:
            rows = s.execute(query.order_by(count.desc(), ErrorEvent.fingerprint).limit(limit)).all()
        return [
            ErrorGroup(fp, category, code, severity, n, executions, _utc(first), _utc(last), sample)
            for fp, category, code, severity, n, executions, first, last, sample in rows
        ]

    def trends(self, where: ErrorFilter, *, interval_s: int) -> list[TrendPoint]:
        with self._db.read() as s:
            epoch = _epoch(s, ErrorEvent.occurred_at)
            bucket = ((epoch // interval_s) * interval_s).label("bucket")
            query = where.apply(select(bucket, ErrorEvent.category, func.count())).group_by(
                bucket, ErrorEvent.category
            )
            rows = s.execute(query.order_by(bucket, ErrorEvent.category)).all()
        return [TrendPoint(datetime.fromtimestamp(int(b), UTC), category, n) for b, category, n in rows]


def _epoch(s: Session, column: Any) -> Any:
    """Whole seconds since the epoch, as an integer expression of the session's dialect."""
    if s.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", column), BigInteger)  # stored as UTC text
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def default_since(now: datetime | None = None, hours: int = 24) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(hours=hours)
