"""Dependencies of the routes, as Annotated aliases (``StoreDep``, ``ExecutionDep``, ...)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Path, Request
from temporalio.client import Client

from backend.api.problems import ProblemError
from backend.db.models import Crew, Execution
from backend.db.store import Store
from backend.settings import Settings
from backend.temporal_client import connect

# Ids are UUIDs (and test-friendly words): anything else is refused before a query runs.
ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class TemporalGateway:
    """One Temporal client per API process, connected lazily so the API starts (and answers
    /health) while Temporal is still starting or down."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect(self._settings, attempts=2, delay_s=0.2)
                except RuntimeError as exc:
                    raise ProblemError(
                        "TEMPORAL_UNAVAILABLE", "Temporal is unreachable", headers={"Retry-After": "5"}
                    ) from exc
            return self._client


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


async def get_client(request: Request) -> Client:
    gateway: TemporalGateway = request.app.state.temporal
    return await gateway.client()


def get_gateway(request: Request) -> TemporalGateway:
    return request.app.state.temporal  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]
ClientDep = Annotated[Client, Depends(get_client)]
# For routes that validate input first and reach Temporal only if it is valid.
GatewayDep = Annotated[TemporalGateway, Depends(get_gateway)]


async def get_execution(
    store: StoreDep, execution_id: Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]
) -> Execution:
    found = await asyncio.to_thread(store.get_execution, execution_id)
    if found is None:
        raise ProblemError("EXECUTION_NOT_FOUND", f"no execution {execution_id!r}")
    return found


async def get_crew(store: StoreDep, crew_id: Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]) -> Crew:
    found = await asyncio.to_thread(store.get_crew, crew_id)
    if found is None:
        raise ProblemError("CREW_NOT_FOUND", f"no crew {crew_id!r}")
    return found


ExecutionDep = Annotated[Execution, Depends(get_execution)]
CrewDep = Annotated[Crew, Depends(get_crew)]
