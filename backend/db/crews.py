"""Crews: the registered crews (JSON specs, and the manifests workers register for Python crews),
and the tools of workers' registries that JSON specs may name."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Crew, RegisteredTool, utcnow
from backend.db.paging import Page, newest_first


class CrewNameTaken(Exception):
    pass


def create(s: Session, name: str, spec: dict[str, Any]) -> Crew:
    """Raises IntegrityError (at flush or commit) when the name is taken."""
    crew = Crew(id=str(uuid.uuid4()), name=name, spec=spec, version=1, created_at=utcnow())
    s.add(crew)
    s.flush()
    return crew


def get(s: Session, crew_id: str) -> Crew | None:
    return s.get(Crew, crew_id)


def page(s: Session, *, limit: int, cursor: str | None) -> Page[Crew]:
    return newest_first(s, select(Crew), Crew.created_at, Crew.id, limit, cursor)


def by_name(s: Session, name: str) -> Crew | None:
    return s.scalars(select(Crew).where(Crew.name == name)).first()


def register_python(s: Session, name: str, spec: dict[str, Any]) -> Crew:
    """A worker's manifest of a Python crew: created, or updated when its spec changed (a new code
    version, another worker's settings), its version counting the changes. A JSON crew of the same
    name is not replaced: raises CrewNameTaken."""
    crew = by_name(s, name)
    now = utcnow()
    if crew is None:
        crew = Crew(id=str(uuid.uuid4()), name=name, spec=spec, version=1, created_at=now, source="python")
        s.add(crew)
    elif crew.source != "python":
        raise CrewNameTaken(f"a crew named {name!r} was registered through the API")
    elif crew.spec != spec:
        crew.spec = spec
        crew.version += 1
    crew.registered_at = now
    s.flush()
    return crew


def register_tool(s: Session, name: str, service: str, description: str) -> None:
    row = s.get(RegisteredTool, name)
    if row is None:
        s.add(RegisteredTool(name=name, service=service, description=description, registered_at=utcnow()))
    else:
        row.service, row.description, row.registered_at = service, description, utcnow()


def tool_names(s: Session) -> set[str]:
    return set(s.scalars(select(RegisteredTool.name)))


def tools(s: Session) -> list[RegisteredTool]:
    return list(s.scalars(select(RegisteredTool).order_by(RegisteredTool.name)))
