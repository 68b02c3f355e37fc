"""Keyset pagination with opaque cursors, for every list of the API."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """Raises ValueError on a cursor this module did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(parts, list) or not parts:
        raise ValueError("invalid cursor")
    return parts


def oldest_first(s: Session, query: Select[Any], id_col: Any, limit: int, cursor: str | None) -> Page[Any]:
    """For append-only tables (logs, error events): by id, ascending."""
    if cursor:
        (after,) = decode_cursor(cursor)[:1]
        if not isinstance(after, int):
            raise ValueError("invalid cursor")
        query = query.where(id_col > after)
    rows = list(s.scalars(query.order_by(id_col).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more else None)


def newest_first(
    s: Session, query: Select[Any], created_col: Any, id_col: Any, limit: int, cursor: str | None
) -> Page[Any]:
    if cursor:
        parts = decode_cursor(cursor)
        if len(parts) != 2 or not isinstance(parts[0], str) or not isinstance(parts[1], str | int):
            raise ValueError("invalid cursor")
        created = datetime.fromisoformat(parts[0])
        query = query.where(or_(created_col < created, and_(created_col == created, id_col < parts[1])))
    rows = list(s.scalars(query.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if not more:
        return Page(rows, None)
    last = rows[-1]
    return Page(rows, encode_cursor(getattr(last, created_col.key), getattr(last, id_col.key)))
