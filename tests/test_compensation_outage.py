"""S10: the compensation record survives a real PostgreSQL outage: the server is stopped while the
compensation activity runs and started again; every record is written exactly once afterwards."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError

from backend.db.database import Database
from backend.db.engine import upgrade_database
from backend.db.store import Compensation, Store
from backend.embedded_pg import EmbeddedPostgres
from backend.executions import start_workflow
from backend.settings import Settings
from backend.simulator.script import FaultRule
from backend.specs import CrewSpec
from backend.worker_factory import build_worker
from tests.ledger import check_ledger
from tests.postgres import start_embedded
from tests.support import SimulatorServer, research_spec

CONCURRENT = 20


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    server = start_embedded()
    yield server
    server.destroy()


class OutageDuringCompensation(Store):
    """Stops the database server as the first compensation attempt begins; a thread starts it
    again a few seconds later, while Temporal keeps retrying the activity."""

    def __init__(self, server: EmbeddedPostgres, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.calls = 0
        self.restarter: threading.Thread | None = None

    def compensate(self, **kwargs: Any) -> Compensation:
        self.calls += 1
        if self.calls == 1:
            self.server.stop()
            self.restarter = threading.Thread(target=lambda: (time.sleep(3), self.server.start(fsync=False)))
            self.restarter.start()
        return super().compensate(**kwargs)


async def test_compensation_written_once_after_postgres_comes_back(
    postgres: EmbeddedPostgres, temporal_client: Client, settings: Settings, sim: SimulatorServer
) -> None:
    # S10 with 20 concurrent executions: all fail at task 2, and the server goes down as the first
    # compensation begins, while the others are still running, retrying or compensating.
    upgrade_database(postgres.url())
    store = OutageDuringCompensation(postgres, Database.from_url(postgres.url()))
    pg_settings = settings.model_copy(
        update={"database_url": postgres.url(), "worker_max_concurrent_tasks": CONCURRENT}
    )
    sim.script.add_rules([FaultRule(kind="content_policy", agent="analyst", count=None)])
    spec = CrewSpec.model_validate(research_spec(sim.base_url)).model_dump(mode="json")
    executions = [
        store.create_execution(
            crew_id=None,
            crew_name="research",
            spec=spec,
            inputs={"topic": f"t{i}"},
            idempotency_key=None,
            request_hash=None,
        )[0]
        for i in range(CONCURRENT)
    ]
    worker = build_worker(temporal_client, pg_settings, store=store)
    async with worker:
        handles = [await start_workflow(temporal_client, pg_settings, store, e) for e in executions]
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    assert store.restarter is not None
    store.restarter.join(10)

    print(f"\ncompensation attempts across the PostgreSQL outage: {store.calls} for {CONCURRENT} executions")
    assert all(isinstance(o, WorkflowFailureError) for o in outcomes), outcomes
    assert store.calls > CONCURRENT  # the outage made at least one attempt fail
    ids = [e.id for e in executions]
    report = await check_ledger(store, temporal_client, ids)
    print(f"S10: {report.line()}")
    assert report.problems == [] and report.duplicates == 0
    assert report.by_status["failed"] == report.final_records == report.dead_letters == CONCURRENT
    assert {f.error["code"] for e in ids for f in store.failures_of(e)} == {"LLM_CONTENT_REFUSED"}
