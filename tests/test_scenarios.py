"""SCENARIOS.md S2 and S4 with 20 concurrent executions each, checked by the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.exc import OperationalError
from temporalio.client import Client

from backend.db.engine import make_engine, make_session_factory
from backend.db.faults import DbFaults
from backend.db.store import Store
from backend.reconciler import start_orphans
from backend.settings import Settings
from backend.specs import CrewSpec
from backend.worker_factory import build_worker
from tests.ledger import calls_by_logical_call, check_ledger
from tests.support import SimulatorServer, research_spec

CONCURRENT = 20


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Calls per logical call are counted exactly here: a 2 s heartbeat timeout on a loaded 2-core
    # machine lets Temporal start a second attempt while the first still runs (seen once in CI).
    return settings.model_copy(update={"task_heartbeat_timeout_s": 30})


@pytest.fixture
def faults() -> DbFaults:
    return DbFaults()


@pytest.fixture
def faulty_store(settings: Settings, faults: DbFaults) -> Store:
    return Store(make_session_factory(make_engine(settings.database_url)), faults=faults)


@pytest.fixture
async def worker(temporal_client: Client, settings: Settings, faulty_store: Store) -> AsyncIterator[None]:
    w, executor = build_worker(temporal_client, settings, store=faulty_store)
    async with w:
        yield
    executor.shutdown(wait=False)


def accept(store: Store, sim: SimulatorServer, n: int) -> list[str]:
    """Executions as the API writes them (pending rows), with distinct inputs per execution."""
    spec = CrewSpec.model_validate(research_spec(sim.base_url)).model_dump(mode="json")
    return [
        store.create_execution(
            crew_id=None,
            crew_name="research",
            spec=spec,
            inputs={"topic": f"t{i}"},
            idempotency_key=None,
            request_hash=None,
        )[0].id  # fmt: skip
        for i in range(n)
    ]


async def wait_all_terminal(store: Store, ids: list[str], timeout_s: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        rows = [store.get_execution(i) for i in ids]
        if all(r is not None and r.status in ("completed", "degraded", "failed", "cancelled") for r in rows):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("executions did not all finish")


async def test_s4_accepted_executions_the_api_never_started_are_started_by_the_reconciler(
    temporal_client: Client, settings: Settings, faulty_store: Store, sim: SimulatorServer, worker: None
) -> None:
    # The API wrote the rows and died before starting the workflows.
    ids = accept(faulty_store, sim, CONCURRENT)
    # Two reconcilers (two API replicas) race for the same orphans: still one workflow each.
    started = await asyncio.gather(
        start_orphans(temporal_client, settings, faulty_store, older_than_s=-1),
        start_orphans(temporal_client, settings, faulty_store, older_than_s=-1),
    )
    assert started[0] == CONCURRENT and started[1] in (0, CONCURRENT)
    await wait_all_terminal(faulty_store, ids)
    report = await check_ledger(faulty_store, temporal_client, ids, max_calls_per_logical_call=1,
                                calls_per_task=calls_by_logical_call(sim.calls()))  # fmt: skip
    print(f"\nS4: {report.line()}")
    assert report.problems == [] and report.by_status["completed"] == CONCURRENT and report.duplicates == 0
    assert len(sim.calls()) == 3 * CONCURRENT  # every task ran exactly once


async def test_s2_output_committed_but_attempt_unreported_is_reused_not_recomputed(
    temporal_client: Client,
    settings: Settings,
    faulty_store: Store,
    faults: DbFaults,
    sim: SimulatorServer,
    worker: None,
) -> None:
    # Ten attempts die right after committing their output (a dropped connection, a SIGKILL).
    faults.arm("complete_task.after_commit", OperationalError("COMMIT", {}, ConnectionResetError()), times=10)
    ids = accept(faulty_store, sim, CONCURRENT)
    await start_orphans(temporal_client, settings, faulty_store, older_than_s=-1)
    await wait_all_terminal(faulty_store, ids)

    assert faults.fired == ["complete_task.after_commit"] * 10
    report = await check_ledger(faulty_store, temporal_client, ids, max_calls_per_logical_call=1,
                                calls_per_task=calls_by_logical_call(sim.calls()))  # fmt: skip
    print(f"\nS2: {report.line()}")
    assert report.problems == [] and report.by_status["completed"] == CONCURRENT and report.duplicates == 0
    assert len(sim.calls()) == 3 * CONCURRENT  # the retried attempts reused the committed outputs
