"""Crews: the registered crew specs."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Crew, utcnow
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
