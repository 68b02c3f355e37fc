from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from backend.api.deps import ID_PATTERN, StoreDep
from backend.api.problems import ProblemError, invalid_cursor
from backend.api.schemas import ErrorGroupPublic, ErrorRecordPublic, Page, TrendPointPublic
from backend.db.analytics import ErrorAnalytics, ErrorFilter, default_since, interval_seconds
from backend.exceptions.codes import Category, Severity

router = APIRouter(prefix="/api/v1/errors", tags=["errors"])
_CATEGORY = "^(" + "|".join(c.value for c in Category) + ")$"
_SEVERITY = "^(" + "|".join(s.value for s in Severity) + ")$"


def error_filter(
    category: Annotated[str | None, Query(pattern=_CATEGORY)] = None,
    severity: Annotated[str | None, Query(pattern=_SEVERITY)] = None,
    code: Annotated[str | None, Query(pattern="^[A-Z][A-Z0-9_]{1,63}$")] = None,
    crew_id: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ErrorFilter:
    return ErrorFilter(category, severity, code, crew_id, since, until)


FilterDep = Annotated[ErrorFilter, Depends(error_filter)]


def _bad(field: str, message: str) -> ProblemError:
    return ProblemError(
        "REQUEST_INVALID", message, errors=[{"loc": ["query", field], "msg": message, "type": "value"}]
    )


@router.get("", response_model=Page[ErrorRecordPublic])
async def list_errors(
    store: StoreDep,
    where: FilterDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[ErrorRecordPublic]:
    """Attempt-level error events across executions, newest first."""
    try:
        page = await asyncio.to_thread(ErrorAnalytics(store.db).errors, where, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[ErrorRecordPublic](
        items=[ErrorRecordPublic.of(e) for e in page.items], next_cursor=page.next_cursor
    )


@router.get("/groups", response_model=list[ErrorGroupPublic])
async def error_groups(
    store: StoreDep, where: FilterDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[ErrorGroupPublic]:
    """Errors grouped by fingerprint (same problem), most frequent first; default: last 24 h."""
    where = where if where.since else ErrorFilter(**{**where.__dict__, "since": default_since()})
    groups = await asyncio.to_thread(ErrorAnalytics(store.db).groups, where, limit=limit)
    return [ErrorGroupPublic(**g.__dict__) for g in groups]


@router.get("/trends", response_model=list[TrendPointPublic])
async def error_trends(
    store: StoreDep, where: FilterDep, interval: Annotated[str, Query(max_length=8)] = "1h"
) -> list[TrendPointPublic]:
    """Error counts per time bucket and category; default: last 24 h in 1 h buckets."""
    try:
        seconds = interval_seconds(interval)
    except ValueError as exc:
        raise _bad("interval", str(exc)) from exc
    where = where if where.since else ErrorFilter(**{**where.__dict__, "since": default_since()})
    points = await asyncio.to_thread(ErrorAnalytics(store.db).trends, where, interval_s=seconds)
    return [TrendPointPublic(**p.__dict__) for p in points]
