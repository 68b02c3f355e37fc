"""Compensation and the dead letter queue, through the API on the dev server with a real worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from temporalio.client import Client, WorkflowExecutionStatus

from backend.api.app import create_app
from backend.db.store import Store
from backend.settings import Settings
from backend.simulator.script import FaultRule
from backend.worker_factory import build_worker
from tests.commit_faults import CommitFaults
from tests.ledger import closed_workflow
from tests.support import SimulatorServer, assert_problem, research_spec, wait_terminal


@pytest.fixture
def dlq_store(settings: Settings) -> Store:
    return Store.from_url(settings.database_url)


@pytest.fixture
def faults(dlq_store: Store) -> CommitFaults:
    return CommitFaults(dlq_store.db)


@pytest.fixture
async def dlq_api(
    temporal_client: Client, settings: Settings, dlq_store: Store
) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    """The API plus a worker whose store's commits can be made ambiguous (``faults``)."""
    store = dlq_store
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    worker = build_worker(temporal_client, settings, store=store)
    async with (
        app.router.lifespan_context(app),
        worker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client, store


async def fail_once(api: httpx.AsyncClient, sim: SimulatorServer, name: str) -> dict[str, Any]:
    """An execution whose task 2 of 3 fails for good (a content-policy refusal)."""
    sim.script.add_rules([FaultRule(kind="content_policy", agent="analyst", count=1)])
    started = await api.post(
        "/api/v1/executions",
        json={"crew": research_spec(sim.base_url, name=name), "inputs": {"topic": "eels"}},
    )
    done = await wait_terminal(api, started.json()["id"])
    assert done["status"] == "failed"
    return done


async def dead_letters_of(api: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    items = (await api.get("/api/v1/dead-letters")).json()["items"]
    return [d for d in items if d["execution_id"] == execution_id]


async def test_permanent_failure_yields_one_final_record_and_one_dead_letter_with_the_checkpoint(
    dlq_api: tuple[httpx.AsyncClient, Store], sim: SimulatorServer
) -> None:
    api, store = dlq_api
    done = await fail_once(api, sim, "perm")

    letters = await dead_letters_of(api, done["id"])
    assert len(letters) == 1
    letter = letters[0]
    assert letter["status"] == "open" and letter["reason"] == "task analyse failed"
    assert letter["error"]["code"] == "LLM_CONTENT_REFUSED"
    assert [t["name"] for t in letter["completed_tasks"]] == ["research"]
    assert letter["completed_tasks"][0]["output"].startswith("[researcher] findings")
    assert letter["inputs"] == {"topic": "eels"}
    failures = store.failures_of(done["id"])
    assert len(failures) == 1
    assert [c["code"] for c in failures[0].error_chain] == ["LLM_CONTENT_REFUSED"]
    assert done["error"]["code"] == "LLM_CONTENT_REFUSED"
    assert (await api.get(f"/api/v1/dead-letters/{letter['id']}")).json()["id"] == letter["id"]


async def test_compensation_retried_after_an_ambiguous_commit_writes_nothing_twice(
    dlq_api: tuple[httpx.AsyncClient, Store],
    sim: SimulatorServer,
    faults: CommitFaults,
    temporal_client: Client,
) -> None:
    api, store = dlq_api
    # The commit succeeds, then the caller sees a dropped connection: Temporal retries the activity.
    faults.arm("compensate", OperationalError("COMMIT", {}, ConnectionResetError("reset")))
    done = await fail_once(api, sim, "ambiguous")

    assert faults.fired == ["compensate"]
    assert len(store.failures_of(done["id"])) == 1
    assert len(await dead_letters_of(api, done["id"])) == 1
    logs = (await api.get(f"/api/v1/executions/{done['id']}/logs", params={"limit": 500})).json()["items"]
    assert [entry["event"] for entry in logs].count("execution.failed") == 1
    # The retried compensation returned (a no-op), so the workflow closed as failed.
    closed = await closed_workflow(temporal_client, done["workflow_id"])
    assert closed.status == WorkflowExecutionStatus.FAILED


async def test_replay_runs_only_the_failed_task_and_the_ones_after_it(
    dlq_api: tuple[httpx.AsyncClient, Store], sim: SimulatorServer
) -> None:
    api, _ = dlq_api
    done = await fail_once(api, sim, "replay")
    (letter,) = await dead_letters_of(api, done["id"])
    sim.script.clear_calls()

    replayed = await api.post(
        f"/api/v1/dead-letters/{letter['id']}/replay", json={"inputs_patch": {"extra": 1}}
    )
    assert replayed.status_code == 202
    finished = await wait_terminal(api, replayed.json()["id"])

    assert finished["status"] == "completed"
    assert finished["inputs"] == {"topic": "eels", "extra": 1}
    assert [c["agent"] for c in sim.calls()] == ["analyst", "writer"]  # task 1 came from the checkpoint
    assert finished["tasks"][0]["output"] == letter["completed_tasks"][0]["output"]
    after = (await api.get(f"/api/v1/dead-letters/{letter['id']}")).json()
    assert after["status"] == "replayed" and after["replayed_execution_id"] == finished["id"]
    assert_problem(await api.post(f"/api/v1/dead-letters/{letter['id']}/replay"), 409, "DEAD_LETTER_NOT_OPEN")
    assert_problem(
        await api.post(f"/api/v1/dead-letters/{letter['id']}/discard"), 409, "DEAD_LETTER_NOT_OPEN"
    )


async def test_concurrent_replays_start_exactly_one_execution(
    dlq_api: tuple[httpx.AsyncClient, Store], sim: SimulatorServer
) -> None:
    api, _ = dlq_api
    done = await fail_once(api, sim, "race")
    (letter,) = await dead_letters_of(api, done["id"])
    answers = await asyncio.gather(
        *(api.post(f"/api/v1/dead-letters/{letter['id']}/replay") for _ in range(8))
    )
    assert sorted(r.status_code for r in answers) == [202] + [409] * 7
    winner = next(r.json() for r in answers if r.status_code == 202)
    assert (await wait_terminal(api, winner["id"]))["status"] == "completed"


async def test_discarded_dead_letter_cannot_be_replayed(
    dlq_api: tuple[httpx.AsyncClient, Store], sim: SimulatorServer
) -> None:
    api, _ = dlq_api
    done = await fail_once(api, sim, "discard")
    (letter,) = await dead_letters_of(api, done["id"])
    discarded = await api.post(f"/api/v1/dead-letters/{letter['id']}/discard")
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    assert_problem(await api.post(f"/api/v1/dead-letters/{letter['id']}/replay"), 409, "DEAD_LETTER_NOT_OPEN")
    assert [
        d["id"]
        for d in (await api.get("/api/v1/dead-letters", params={"status": "discarded"})).json()["items"]
    ] == [letter["id"]]
    assert_problem(await api.get("/api/v1/dead-letters/nope"), 404, "DEAD_LETTER_NOT_FOUND")
    assert_problem(await api.post("/api/v1/dead-letters/nope/replay"), 404, "DEAD_LETTER_NOT_FOUND")
    assert_problem(await api.get("/api/v1/dead-letters", params={"status": "weird"}), 422, "REQUEST_INVALID")


async def test_cancelled_execution_is_compensated_once(
    dlq_api: tuple[httpx.AsyncClient, Store], sim: SimulatorServer
) -> None:
    api, store = dlq_api
    sim.script.add_rules([FaultRule(kind="slow", agent="analyst", delay_s=3)])
    started = (
        await api.post(
            "/api/v1/executions",
            json={"crew": research_spec(sim.base_url, name="cancel"), "inputs": {"topic": "x"}},
        )
    ).json()
    for _ in range(200):
        if sim.calls("analyst"):
            break
        await asyncio.sleep(0.05)
    assert (await api.post(f"/api/v1/executions/{started['id']}/cancel")).status_code == 202
    done = await wait_terminal(api, started["id"])

    assert done["status"] == "cancelled"
    (letter,) = await dead_letters_of(api, done["id"])
    assert letter["reason"] == "execution cancelled"
    assert [t["name"] for t in letter["completed_tasks"]] == ["research"]
    assert len(store.failures_of(done["id"])) == 1


async def test_circuit_breaker_routes(api: httpx.AsyncClient, sim: SimulatorServer) -> None:
    started = await api.post(
        "/api/v1/executions", json={"crew": research_spec(sim.base_url, name="cb"), "inputs": {"topic": "x"}}
    )
    await wait_terminal(api, started.json()["id"])
    breakers = (await api.get("/api/v1/circuit-breakers")).json()
    assert [(b["service"], b["state"], b["window_calls"]) for b in breakers] == [("127.0.0.1", "closed", 3)]
    reset = await api.post("/api/v1/circuit-breakers/127.0.0.1/reset")
    assert reset.status_code == 200 and reset.json()["window_calls"] == 0
    assert_problem(await api.post("/api/v1/circuit-breakers/nope/reset"), 404, "CIRCUIT_BREAKER_NOT_FOUND")
