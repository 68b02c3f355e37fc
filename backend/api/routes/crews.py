from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import CrewDep, StoreDep
from backend.api.links import CREW_LINKS, responds
from backend.api.problems import ProblemError, invalid_cursor
from backend.api.schemas import CrewPublic, Page
from backend.db.store import CrewNameTaken
from backend.specs import CrewSpec

router = APIRouter(prefix="/api/v1/crews", tags=["crews"])


@router.post(
    "",
    status_code=201,
    response_model=CrewPublic,
    operation_id="createCrew",
    responses=responds(201, CREW_LINKS),
)
async def create_crew(spec: CrewSpec, store: StoreDep) -> CrewPublic:
    try:
        crew = await asyncio.to_thread(store.create_crew, spec.name, spec.model_dump(mode="json"))
    except CrewNameTaken as exc:
        raise ProblemError("CREW_NAME_TAKEN", f"a crew named {spec.name!r} exists") from exc
    return CrewPublic.of(crew)


@router.get("", response_model=Page[CrewPublic])
async def list_crews(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[CrewPublic]:
    try:
        page = await asyncio.to_thread(store.list_crews, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[CrewPublic](items=[CrewPublic.of(c) for c in page.items], next_cursor=page.next_cursor)


@router.get("/{crew_id}", response_model=CrewPublic, operation_id="getCrew")
async def get_crew(crew: CrewDep) -> CrewPublic:
    return CrewPublic.of(crew)
