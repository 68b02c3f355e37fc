"""CrewExecutionWorkflow on the real dev server, with real activities, real CrewAI, real SQLite
and the simulator over HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session
from temporalio.client import Client, WorkflowFailureError

from backend.db.store import Store
from backend.executions import start_workflow
from backend.settings import Settings
from backend.specs import CrewSpec
from backend.worker_factory import build_worker
from tests.support import SimulatorServer, research_spec
from workflows.contracts import CrewExecutionResult


@pytest.fixture
async def worker(temporal_client: Client, settings: Settings, store: Store) -> AsyncIterator[None]:
    w = build_worker(temporal_client, settings, store=store)
    async with w:
        yield


async def _run(client: Client, settings: Settings, store: Store, spec: dict, inputs: dict):
    validated = CrewSpec.model_validate(spec).model_dump(mode="json")
    execution, _ = store.create_execution(
        crew_id=None,
        crew_name=validated["name"],
        spec=validated,
        inputs=inputs,
        idempotency_key=None,
        request_hash=None,
    )
    await start_workflow(client, settings, store, execution)
    return execution, client.get_workflow_handle(execution.workflow_id, result_type=CrewExecutionResult)


async def test_crew_runs_every_task_once_and_passes_context(
    temporal_client: Client, settings: Settings, store: Store, sim: SimulatorServer, worker: None
) -> None:
    execution, handle = await _run(
        temporal_client, settings, store, research_spec(sim.base_url), {"topic": "otters"}
    )
    result = await handle.result()

    assert result.status == "completed"
    assert [t.status for t in result.tasks] == ["completed"] * 3
    assert [c["agent"] for c in sim.calls()] == ["researcher", "analyst", "writer"]
    row = store.get_execution(execution.id)
    assert row is not None and row.status == "completed" and row.run_id
    outputs = {t.name: t.output for t in row.tasks}
    assert outputs["research"].startswith("[researcher] findings")
    assert "otters" in outputs["research"]
    # "write" lists only "analyse" as context, "analyse" gets "research" by default.
    analyse_prompt, write_prompt = (c["task_hint"] for c in sim.calls()[1:])
    assert "Analyse the facts about otters" in analyse_prompt
    assert "Write a short report on otters" in write_prompt
    progress = await handle.query("progress")
    assert [p["status"] for p in progress] == ["completed"] * 3


async def test_transient_faults_are_retried_by_temporal_only(
    temporal_client: Client, settings: Settings, store: Store, sim: SimulatorServer, worker: None
) -> None:
    sim.script.add_rules([])
    from backend.simulator.script import FaultRule

    sim.script.add_rules(
        [
            FaultRule(kind="server_error", agent="analyst", count=2),
            FaultRule(kind="rate_limit", agent="researcher", count=1, retry_after_s=0),
        ]
    )
    execution, handle = await _run(
        temporal_client, settings, store, research_spec(sim.base_url), {"topic": "otters"}
    )
    result = await handle.result()

    assert result.status == "completed"
    assert [t.attempts for t in result.tasks] == [2, 3, 1]
    # One provider call per activity attempt: no hidden retries in CrewAI or the SDK.
    assert len(sim.calls("researcher")) == 2
    assert len(sim.calls("analyst")) == 3
    row = store.get_execution(execution.id)
    assert row is not None and [t.attempts for t in row.tasks] == [2, 3, 1]


async def test_permanent_fault_fails_execution_without_retry(
    temporal_client: Client, settings: Settings, store: Store, sim: SimulatorServer, worker: None
) -> None:
    from backend.simulator.script import FaultRule

    sim.script.add_rules([FaultRule(kind="context_length", agent="analyst", count=None)])
    execution, handle = await _run(
        temporal_client, settings, store, research_spec(sim.base_url), {"topic": "otters"}
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    assert len(sim.calls("analyst")) == 1
    row = store.get_execution(execution.id)
    assert row is not None and row.status == "failed"
    assert row.error is not None and row.error["code"] == "LLM_CONTEXT_TOO_LONG"
    assert [t.status for t in row.tasks] == ["completed", "failed", "pending"]


@pytest.mark.parametrize("journal", [False, True], ids=["journal off", "journal on"])
async def test_a_successful_attempt_takes_two_transactions_and_one_per_recorded_call(
    temporal_client: Client, settings: Settings, store: Store, sim: SimulatorServer, journal: bool
) -> None:
    # Every transaction the database sees while the execution runs, by name (reads included:
    # SQLAlchemy begins one for them too). The breaker's permit and its record ride in the two;
    # the call journal commits each call before its answer is used.
    settings = settings.model_copy(update={"journal_enabled": journal})
    begun: list[str] = []

    def count(session: Session, transaction: Any, connection: Any) -> None:
        begun.append(session.info.get("transaction", "read"))

    event.listen(store.db.sessions, "after_begin", count)
    try:
        async with build_worker(temporal_client, settings, store=store):
            execution, handle = await _run(
                temporal_client, settings, store, research_spec(sim.base_url), {"topic": "owls"}
            )
            begun.clear()  # what the test itself wrote to start it
            result = await handle.result()
    finally:
        event.remove(store.db.sessions, "after_begin", count)

    assert result.status == "completed"
    per_attempt = Counter(begun)
    # The execution's "running" rides with the first task's begin, its end with the last task's finish.
    expected = {"begin_attempt": 3, "finish_attempt.completed": 3}
    assert per_attempt == expected | ({"journal.record": 3} if journal else {}), begun
