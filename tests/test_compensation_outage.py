"""The compensation record survives a real PostgreSQL outage: the server is stopped while the
compensation activity runs and started again; the record is written exactly once afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError

from backend.db.engine import make_engine, make_session_factory, upgrade_database
from backend.db.store import Compensation, Store
from backend.executions import start_workflow
from backend.settings import Settings
from backend.simulator.script import FaultRule
from backend.specs import CrewSpec
from backend.worker_factory import build_worker
from tests.pg_instance import PrivatePostgres
from tests.support import SimulatorServer, research_spec


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


class OutageDuringCompensation(Store):
    """Stops the database server as the first compensation attempt begins; a thread starts it
    again a few seconds later, while Temporal keeps retrying the activity."""

    def __init__(self, server: PrivatePostgres, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.calls = 0
        self.restarter: threading.Thread | None = None

    def compensate(self, **kwargs: Any) -> Compensation:
        self.calls += 1
        if self.calls == 1:
            self.server.stop()
            self.restarter = threading.Thread(target=lambda: (time.sleep(3), self.server.start()))
            self.restarter.start()
        return super().compensate(**kwargs)


async def test_compensation_written_once_after_postgres_comes_back(
    postgres: PrivatePostgres, temporal_client: Client, settings: Settings, sim: SimulatorServer
) -> None:
    upgrade_database(postgres.url)
    store = OutageDuringCompensation(postgres, make_session_factory(make_engine(postgres.url)))
    pg_settings = settings.model_copy(update={"database_url": postgres.url})
    sim.script.add_rules([FaultRule(kind="content_policy", agent="analyst", count=1)])
    spec = CrewSpec.model_validate(research_spec(sim.base_url)).model_dump(mode="json")
    execution, _ = store.create_execution(crew_id=None, crew_name="research", spec=spec, inputs={"topic": "x"},
                                          idempotency_key=None, request_hash=None)  # fmt: skip
    worker, executor = build_worker(temporal_client, pg_settings, store=store)
    async with worker:
        handle = await start_workflow(temporal_client, pg_settings, store, execution)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    executor.shutdown(wait=False)
    assert store.restarter is not None
    store.restarter.join(10)

    print(f"\ncompensation attempts across the PostgreSQL outage: {store.calls}")
    assert store.calls >= 2  # the outage made at least one attempt fail
    failures = store.failures_of(execution.id)
    assert len(failures) == 1 and failures[0].error["code"] == "LLM_CONTENT_REFUSED"
    letters = store.list_dead_letters(status=None, limit=10, cursor=None).items
    assert [d.execution_id for d in letters] == [execution.id]
    row = store.get_execution(execution.id)
    assert row is not None and row.status == "failed"
