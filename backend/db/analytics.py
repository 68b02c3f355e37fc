"""Error analytics over the error events: filtered lists, groups by fingerprint, trends per time
bucket. Aggregation runs in the database (GROUP BY over indexed columns; over long windows, over
the hourly counts kept beside the events), so it stays fast with a million events; bucketing uses
each dialect's own epoch arithmetic. Only the few groups or buckets meet in Python."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.orm import Session

from backend.db.database import Database
from backend.db.models import ErrorEvent, ErrorHourly
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


# Windows at least this long read whole hours from error_hourly and only their ragged edges
# from the events; shorter ones read the events (exact, and fast on the indexed window).
ROLLUP_FROM = timedelta(hours=48)
GroupKey = tuple[str, str, str, str]  # fingerprint, category, code, severity


@dataclass
class _Group:
    count: int
    executions: int
    first_seen: datetime
    last_seen: datetime
    sample: str

    def add(self, other: _Group) -> None:
        self.count += other.count
        self.executions += other.executions
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.sample = min(self.sample, other.sample)


class ErrorAnalytics:
    """Lists, groups and trends of error events.

    Over a long window (:data:`ROLLUP_FROM`) groups and trends add the hourly counts of
    ``error_hourly`` for the whole hours inside it and the events of the partial hours at its
    edges: counts, first and last seen are exact; ``executions`` is then the sum over hours of
    the executions failing in that group, so one that failed the same way in two different hours
    counts twice (within a shorter window it is exact).
    """

    def __init__(self, db: Database, *, now: Any = None) -> None:
        self._db = db
        self._now = now or (lambda: datetime.now(UTC))

    def errors(self, where: ErrorFilter, *, limit: int, cursor: str | None) -> Page[ErrorEvent]:
        """Newest first."""
        with self._db.read() as s:
            query = where.apply(select(ErrorEvent))
            return newest_first(s, query, ErrorEvent.occurred_at, ErrorEvent.id, limit, cursor)

    def _split(self, where: ErrorFilter) -> tuple[list[ErrorFilter], ErrorFilter | None]:
        """The parts of the window read from events, and the whole hours read from error_hourly."""
        since, until = where.since, where.until or self._now()
        if since is None or until - since < ROLLUP_FROM:
            return [where], None
        first_hour = _ceil_hour(since)
        last_hour = until.replace(minute=0, second=0, microsecond=0)
        edges = [replace(where, until=first_hour), replace(where, since=last_hour, until=until)]
        return edges, replace(where, since=first_hour, until=last_hour)

    def groups(self, where: ErrorFilter, *, limit: int) -> list[ErrorGroup]:
        edges, hours = self._split(where)
        merged: dict[GroupKey, _Group] = {}
        with self._db.read() as s:
            parts = [self._event_groups(s, edge) for edge in edges]
            if hours is not None:
                parts.append(self._hourly_groups(s, hours))
        for part in parts:
            for key, group in part.items():
                if key in merged:
                    merged[key].add(group)
                else:
                    merged[key] = group
        ranked = sorted(merged.items(), key=lambda item: (-item[1].count, item[0][0]))[:limit]
        return [
            ErrorGroup(fp, category, code, severity, g.count, g.executions, _utc(g.first_seen), _utc(g.last_seen),
                       g.sample)
            for (fp, category, code, severity), g in ranked
        ]  # fmt: skip

    @staticmethod
    def _event_groups(s: Session, where: ErrorFilter) -> dict[GroupKey, _Group]:
        e = ErrorEvent
        query = where.apply(
            select(e.fingerprint, e.category, e.code, e.severity, func.count(),
                   func.count(func.distinct(e.execution_id)), func.min(e.occurred_at), func.max(e.occurred_at),
                   func.min(e.message))
        ).group_by(e.fingerprint, e.category, e.code, e.severity)  # fmt: skip
        return {(fp, c, code, sev): _Group(n, ex, _utc(first), _utc(last), sample)
                for fp, c, code, sev, n, ex, first, last, sample in s.execute(query)}  # fmt: skip

    @staticmethod
    def _hourly_groups(s: Session, where: ErrorFilter) -> dict[GroupKey, _Group]:
        h = ErrorHourly
        query = _hourly(
            select(h.fingerprint, h.category, h.code, h.severity, func.sum(h.count), func.sum(h.executions),
                   func.min(h.first_seen), func.max(h.last_seen), func.min(h.sample_message)),
            where,
        ).group_by(h.fingerprint, h.category, h.code, h.severity)  # fmt: skip
        return {(fp, c, code, sev): _Group(int(n), int(ex), _utc(first), _utc(last), sample)
                for fp, c, code, sev, n, ex, first, last, sample in s.execute(query)}  # fmt: skip

    def trends(self, where: ErrorFilter, *, interval_s: int) -> list[TrendPoint]:
        edges, hours = self._split(where) if interval_s % 3600 == 0 else ([where], None)
        counts: dict[tuple[int, str], int] = {}
        with self._db.read() as s:
            for edge in edges:
                epoch = _epoch(s, ErrorEvent.occurred_at)
                bucket = ((epoch // interval_s) * interval_s).label("bucket")
                query = edge.apply(select(bucket, ErrorEvent.category, func.count())).group_by(
                    bucket, ErrorEvent.category
                )
                for b, category, n in s.execute(query):
                    counts[(int(b), category)] = counts.get((int(b), category), 0) + n
            if hours is not None:
                epoch = _epoch(s, ErrorHourly.hour)
                bucket = ((epoch // interval_s) * interval_s).label("bucket")
                query = _hourly(select(bucket, ErrorHourly.category, func.sum(ErrorHourly.count)), hours)
                for b, category, n in s.execute(query.group_by(bucket, ErrorHourly.category)):
                    counts[(int(b), category)] = counts.get((int(b), category), 0) + int(n)
        return [
            TrendPoint(datetime.fromtimestamp(b, UTC), category, n)
            for (b, category), n in sorted(counts.items())
        ]


def _hourly(query: Any, where: ErrorFilter) -> Any:
    """``where`` on error_hourly: the same filters, over whole hours."""
    h = ErrorHourly
    for column, value in ((h.category, where.category), (h.severity, where.severity), (h.code, where.code)):
        if value is not None:
            query = query.where(column == value)
    if where.crew_id is not None:
        query = query.where(h.crew_key == where.crew_id)
    if where.since is not None:
        query = query.where(h.hour >= where.since)
    if where.until is not None:
        query = query.where(h.hour < where.until)
    return query


def _ceil_hour(at: datetime) -> datetime:
    floor = at.replace(minute=0, second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(hours=1)


def _epoch(s: Session, column: Any) -> Any:
    """Whole seconds since the epoch, as an integer expression of the session's dialect."""
    if s.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", column), BigInteger)  # stored as UTC text
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def default_since(now: datetime | None = None, hours: int = 24) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(hours=hours)
