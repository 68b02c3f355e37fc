"""The FastAPI application: ``create_app(settings)``; served by uvicorn (``crewrun api``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from temporalio.client import Client

from backend.alerts import Alerter, sinks_from
from backend.api.deps import TemporalGateway
from backend.api.limits import BodySizeLimit
from backend.api.problems import ProblemError, install_problem_handlers, problem_response
from backend.api.routes import (
    alerts,
    circuit_breakers,
    crewai_compat,
    crews,
    dead_letters,
    errors,
    executions,
    operations,
    tools,
)
from backend.api.schemas import problem_responses
from backend.api.security import OPEN_PATHS, KeyRing, RateLimiter
from backend.breaker import CircuitBreaker, config_from
from backend.console import install_console, is_console_path
from backend.db.database import Database
from backend.db.engine import make_engine, make_session_factory, upgrade_database
from backend.db.store import Store
from backend.metrics import Metrics, SharedStateCollector
from backend.reconciler import prune_journal, redeliver_alerts, resume_webhooks, start_orphans
from backend.settings import Settings, get_settings

log = structlog.get_logger("crewrun.api")
RECONCILE_EVERY_S = 15.0


def _document_problems_as_problem_json(app: FastAPI) -> None:
    """FastAPI files a response model under application/json; problems are application/problem+json.
    (Not on the CrewAI-compatible routes: their errors are CrewAI's JSON bodies.)"""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for route, path in schema.get("paths", {}).items():
                if route.startswith("/crewai/"):
                    continue
                for operation in path.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "application/json" in content:
                            content["application/problem+json"] = content.pop("application/json")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def create_app(
    settings: Settings | None = None,
    *,
    temporal_client: Client | None = None,
    reconcile: bool = True,
    metrics: Metrics | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    metrics = metrics or Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(upgrade_database, settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.store = Store(Database(make_session_factory(engine)))
        app.state.breaker = CircuitBreaker(app.state.store.db, config_from(settings))
        store: Store = app.state.store
        app.state.alerter = Alerter(store.db, list(settings.alert_rules), sinks_from(settings))
        collector = SharedStateCollector(
            lambda: [(b.service, b.state) for b in app.state.breaker.states()],
            store.count_executions,
            lambda: store.count_dead_letters("open"),
        )
        metrics.add_collector(collector)
        task = asyncio.create_task(_reconcile_forever(app)) if reconcile else None
        try:
            yield
        finally:
            if task:
                task.cancel()
            metrics.registry.unregister(collector)
            engine.dispose()

    async def _reconcile_forever(app: FastAPI) -> None:
        while True:
            await asyncio.sleep(RECONCILE_EVERY_S)
            try:
                client = await app.state.temporal.client()
                await start_orphans(client, settings, app.state.store, older_than_s=RECONCILE_EVERY_S)
                await redeliver_alerts(client, settings, app.state.store, older_than_s=RECONCILE_EVERY_S)
                await resume_webhooks(client, settings, app.state.store, older_than_s=RECONCILE_EVERY_S)
                await prune_journal(settings, app.state.store)
            except (ProblemError, Exception) as exc:  # keep reconciling; the next round retries
                log.warning("reconciler.round_failed", error=type(exc).__name__)

    app = FastAPI(
        title="crewrun",
        version="0.1.0",
        description="Run CrewAI crews durably on Temporal, with production-grade error handling.",
        lifespan=lifespan,
        # Every route may answer with problem details; documented so clients (and fuzzers) can
        # check them against the schema.
        responses=problem_responses(400, 401, 404, 405, 409, 413, 422, 429, 500, 503),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.temporal = TemporalGateway(settings, temporal_client)
    install_problem_handlers(app)
    _document_problems_as_problem_json(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    keys = KeyRing(settings.key_digests())
    limiter = RateLimiter(settings.api_rate_limit_per_minute)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        # Inside request_context (added later, so it runs first): refusals carry a request id too.
        if request.url.path in OPEN_PATHS or is_console_path(request.url.path):
            # The console's page and files hold no data; what it shows comes from keyed routes.
            return await call_next(request)  # type: ignore[no-any-return]
        if not keys.enabled:  # loopback only (see `crewrun api`): no callers to tell apart
            return await call_next(request)  # type: ignore[no-any-return]
        key = keys.identify(request.headers.get("authorization"))
        if key is None:
            return problem_response(
                "UNAUTHORIZED",
                "a valid bearer API key is required",
                request,
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = limiter.take(key)
        if wait:
            return problem_response(
                "API_RATE_LIMITED",
                "too many requests for this key",
                request,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return await call_next(request)  # type: ignore[no-any-return]

    @app.middleware("http")
    async def request_context(request: Request, call_next: Any) -> Response:
        # Every log line of a request carries its id (the caller's X-Request-ID if it is sane).
        given = request.headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response: Response = await call_next(request)
            route = getattr(request.scope.get("route"), "path", "unmatched")  # the template, not the id
            metrics.http_requests.labels(request.method, route, str(response.status_code)).inc()
            log.info("api.request", method=request.method, route=route, status=response.status_code)
        response.headers["X-Request-ID"] = request_id
        return response

    app.include_router(operations.router)
    app.include_router(crews.router)
    app.include_router(tools.router)
    app.include_router(crewai_compat.router)
    app.include_router(executions.router)
    app.include_router(errors.router)
    app.include_router(dead_letters.router)
    app.include_router(circuit_breakers.router)
    app.include_router(alerts.router)
    install_console(app)
    return app
