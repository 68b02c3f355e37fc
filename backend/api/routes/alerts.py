from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from backend.alerts import Alerter
from backend.api.problems import invalid_cursor
from backend.api.schemas import AlertPublic, Page

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.get("", response_model=Page[AlertPublic])
async def list_alerts(
    request: Request,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[AlertPublic]:
    """Every alert raised (one per incident after dedup), newest first, with its delivery status."""
    alerter: Alerter = request.app.state.alerter
    try:
        page = await asyncio.to_thread(alerter.page, since=since, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[AlertPublic](items=[AlertPublic.of(a) for a in page.items], next_cursor=page.next_cursor)
