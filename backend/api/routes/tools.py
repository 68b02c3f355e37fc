"""The tools of the workers' registries: the names a JSON spec may give its agents and tasks."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from backend.api.deps import StoreDep

router = APIRouter(prefix="/api/v1/tools", tags=["tools"])


class ToolPublic(BaseModel):
    name: str
    service: str  # the circuit breaker its calls count against
    description: str
    registered_at: datetime


@router.get("", response_model=list[ToolPublic])
async def list_tools(store: StoreDep) -> list[ToolPublic]:
    rows = await asyncio.to_thread(store.registered_tools)
    return [
        ToolPublic(name=r.name, service=r.service, description=r.description, registered_at=r.registered_at)
        for r in rows
    ]
