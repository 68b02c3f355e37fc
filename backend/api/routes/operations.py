from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from backend.api.deps import StoreDep
from backend.api.problem_codes import PROBLEMS
from backend.api.schemas import ErrorCodePublic, HealthPublic
from backend.exceptions.codes import REGISTRY

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "A dependency is down"}},
)
async def health(request: Request, store: StoreDep) -> JSONResponse:
    database = temporal = "ok"
    try:
        await asyncio.wait_for(asyncio.to_thread(store.ping), timeout=5)
    except Exception:  # any failure to answer is "down"; the reason is for the logs, not the probe
        database = "down"
    try:
        client = await request.app.state.temporal.client()
        await asyncio.wait_for(client.service_client.check_health(), timeout=5)
    except Exception:
        temporal = "down"
    ok = database == temporal == "ok"
    body = HealthPublic(status="ok" if ok else "degraded", database=database, temporal=temporal)
    return JSONResponse(
        body.model_dump(), status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "5"}
    )


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: this API's counters and the shared state read from the DB."""
    body = await asyncio.to_thread(request.app.state.metrics.exposition)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/error-codes", response_model=list[ErrorCodePublic], tags=["errors"])
async def error_codes() -> list[ErrorCodePublic]:
    """Both registries: the codes a task or an execution fails with (kind ``failure``, with a
    category and a severity), and the codes the API answers bad requests with (kind ``problem``)."""
    failures = [
        ErrorCodePublic(
            code=e.code,
            kind="failure",
            category=e.category.value,
            severity=e.severity.value,
            retryable=e.retryable,
            http_status=e.http_status,
            description=e.description,
            remedy=e.remedy,
        )
        for e in REGISTRY.values()
    ]
    problems = [
        ErrorCodePublic(
            code=p.code,
            kind="problem",
            category=None,
            severity=None,
            retryable=p.retryable,
            http_status=p.http_status,
            description=p.description,
            remedy=p.remedy,
        )
        for p in PROBLEMS.values()
        if p.code not in REGISTRY
    ]
    return failures + problems
