"""The backend database as one object: its session factory, and units of work as named
transactions. Every read and write of crewrun goes through here (the aggregate modules next to it
take a session), so a caller can put several writes in one transaction.

A transaction's name is in ``session.info["transaction"]``: log lines and tests use it (a test
injects an "ambiguous commit" after the commit of one named transaction, through SQLAlchemy's
``after_commit`` event, without any branch in this code).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.db.engine import make_engine, make_session_factory


class Database:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_session_factory(make_engine(url)))

    @property
    def engine(self) -> Engine:
        bind = self.sessions.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    @contextmanager
    def transaction(self, name: str) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.sessions() as session, session.begin():
            session.info["transaction"] = name
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (SQLAlchemy begins a transaction lazily and rolls it back at the end)."""
        with self.sessions() as session:
            yield session
