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
    if spec.source != "spec":
        raise ProblemError(
            "CREW_SPEC_INVALID",
            "only JSON specs are registered through the API; a worker registers its Python crews",
            errors=[{"loc": ["source"], "msg": "must be 'spec'", "type": "value_error"}],
        )
    await check_tools(spec=spec, store=store)
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


async def check_tools(store: StoreDep, spec: CrewSpec) -> None:
    """A JSON spec names tools of the workers' registries only: no request can name code."""
    named = {(("agents", i, "tools", j), t) for i, a in enumerate(spec.agents) for j, t in enumerate(a.tools)}
    named |= {
        (("tasks", i, "tools", j), t) for i, task in enumerate(spec.tasks) for j, t in enumerate(task.tools)
    }
    if not named:
        return
    known = await asyncio.to_thread(store.registered_tool_names)
    unknown = sorted((loc, name) for loc, name in named if name not in known)
    if unknown:
        raise ProblemError(
            "TOOL_UNKNOWN",
            f"no worker registered the tool {unknown[0][1]!r}",
            errors=[
                {"loc": list(loc), "msg": f"unknown tool {name!r}", "type": "unknown"}
                for loc, name in unknown
            ],
        )
