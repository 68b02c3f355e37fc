"""A retried task re-pays nothing it already did, on the dev server with real CrewAI and the
simulator: a task whose agent makes 4 LLM calls and 3 tool calls fails at its last LLM call (a
503, a refused key) and is retried; the journal serves the first six from what the first attempt
recorded. Costs and the steps timeline, against the simulator's own usage reports."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from backend.alerts import DEFAULT_RULES, AlertRule
from backend.api.app import create_app
from backend.db.store import Store
from backend.metrics import Metrics
from backend.settings import Settings, ToolSetting
from backend.simulator.script import FaultRule
from backend.worker_factory import build_worker
from tests.ledger import check_ledger
from tests.support import SimulatorServer, wait_status, wait_terminal

# gpt-4o-mini as OpenAI publishes it, per token: the expected costs are computed from these,
# independently of the price table crewrun reads.
INPUT_USD, OUTPUT_USD = 0.15e-6, 0.60e-6
AGENT = "looker"


@pytest.fixture
def journal_settings(settings: Settings, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CREWRUN_TEST_SIM_URL", sim.url)
    rules = [*DEFAULT_RULES, AlertRule(name="big-spender", kind="spend", max_usd=0.00005, cooldown_s=0)]
    return settings.model_copy(
        update={"tools": {"lookup": ToolSetting(ref="tests.crews.tools:LookupTool")}, "alert_rules": rules}
    )


async def api_for(
    temporal_client: Client, settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    worker = build_worker(temporal_client, settings, metrics=metrics)
    async with (
        app.router.lifespan_context(app),
        worker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def journal_api(
    temporal_client: Client, journal_settings: Settings, metrics: Metrics
) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_for(temporal_client, journal_settings, metrics):
        yield client


@pytest.fixture
async def no_replay_api(
    temporal_client: Client, journal_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_for(
        temporal_client, journal_settings.model_copy(update={"journal_replay": False})
    ):
        yield client


def spec(sim: SimulatorServer, name: str) -> dict[str, Any]:
    """One task: the agent calls the lookup tool three times, then answers (4 LLM calls)."""
    return {
        "name": name,
        "agents": [
            {
                "name": AGENT,
                "role": "Looker",
                "goal": "Look {topic} up",
                "llm": {"model": "gpt-4o-mini", "base_url": sim.base_url(AGENT)},
                "tools": ["lookup"],
            }
        ],
        "tasks": [
            {"name": "look", "description": "Look up {topic}", "expected_output": "Facts", "agent": AGENT}
        ],
    }


def three_tool_rounds(sim: SimulatorServer) -> None:
    httpx.post(f"{sim.url}/_sim/agents/{AGENT}", json={"tool_rounds": 3}).raise_for_status()


async def run(api: httpx.AsyncClient, sim: SimulatorServer, name: str, topic: str = "otters") -> str:
    started = await api.post("/api/v1/executions", json={"crew": spec(sim, name), "inputs": {"topic": topic}})
    assert started.status_code == 202, started.text
    return str(started.json()["id"])


async def steps(api: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    return list((await api.get(f"/api/v1/executions/{execution_id}/steps")).json()["items"])


def llm_calls(sim: SimulatorServer) -> list[dict[str, Any]]:
    return sim.llm_calls(AGENT)


async def test_a_task_failing_at_its_last_llm_call_re_pays_only_that_call(
    journal_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    await failing_at_the_last_llm_call(journal_api, sim, replay=True)


async def test_without_replay_the_retry_pays_for_every_call_again_and_the_first_attempts_are_wasted(
    no_replay_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    await failing_at_the_last_llm_call(no_replay_api, sim, replay=False)


async def failing_at_the_last_llm_call(api: httpx.AsyncClient, sim: SimulatorServer, *, replay: bool) -> None:
    three_tool_rounds(sim)
    sim.script.add_rules([FaultRule(kind="server_error", agent=AGENT, after=3, count=1)])
    execution_id = await run(api, sim, f"fail-last-{replay}")
    body = await wait_terminal(api, execution_id)

    assert body["status"] == "completed" and body["tasks"][0]["attempts"] == 2
    if replay:  # the provider saw 4 + 1 calls, the tool service 3
        assert (len(llm_calls(sim)), len(sim.tool_calls("lookup"))) == (5, 3)
    else:
        assert (len(llm_calls(sim)), len(sim.tool_calls("lookup"))) == (8, 6)
    timeline = await steps(api, execution_id)
    second = [(s["kind"], s["outcome"]) for s in timeline if s["attempt"] == 2]
    if replay:
        assert second == [("llm", "replayed"), ("tool", "replayed")] * 3 + [("llm", "ok")]
        assert all(s["cost_usd"] is None and s["tokens_in"] == 0 for s in timeline if s["replayed"])
    else:
        assert second == [("llm", "ok"), ("tool", "ok")] * 3 + [("llm", "ok")]
    first = [(s["kind"], s["outcome"], s["error_code"]) for s in timeline if s["attempt"] == 1]
    assert first[-1] == ("llm", "failed", "LLM_PROVIDER_OVERLOADED")

    # What it cost, against the simulator's own usage reports and OpenAI's published prices.
    paid = [c["usage"] for c in llm_calls(sim) if c["usage"]]
    expected = sum(u["prompt_tokens"] * INPUT_USD + u["completion_tokens"] * OUTPUT_USD for u in paid)
    cost = body["cost"]
    assert cost["tokens_in"] == sum(u["prompt_tokens"] for u in paid)
    assert cost["tokens_out"] == sum(u["completion_tokens"] for u in paid)
    assert math.isclose(cost["cost_usd"], expected, rel_tol=1e-9)
    # Wasted: what the failed attempt paid for and no later attempt reused.
    first_paid = sum(u["prompt_tokens"] * INPUT_USD + u["completion_tokens"] * OUTPUT_USD for u in paid[:3])
    assert math.isclose(cost["wasted_cost_usd"], 0.0 if replay else first_paid, abs_tol=1e-12)
    assert body["tasks"][0]["cost"] == cost


async def test_a_task_paused_on_a_refused_key_at_its_fourth_call_resumes_from_the_journal(
    journal_api: httpx.AsyncClient, temporal_client: Client, journal_settings: Settings, sim: SimulatorServer
) -> None:
    three_tool_rounds(sim)
    sim.script.add_rules([FaultRule(kind="auth", agent=AGENT, after=3, count=1)])
    execution_id = await run(journal_api, sim, "paused-resumed")
    await wait_status(journal_api, execution_id, "paused")

    resumed = await journal_api.post(f"/api/v1/executions/{execution_id}/resume", json={})
    assert resumed.status_code == 202, resumed.text
    body = await wait_terminal(journal_api, execution_id)

    assert body["status"] == "completed"
    assert (len(llm_calls(sim)), len(sim.tool_calls("lookup"))) == (5, 3)
    assert body["cost"]["wasted_cost_usd"] == 0.0  # nothing paid for was thrown away
    report = await check_ledger(
        Store.from_url(journal_settings.database_url), temporal_client, [execution_id]
    )
    assert report.problems == []


async def test_changed_inputs_on_resume_replay_nothing_past_the_first_changed_request(
    journal_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    three_tool_rounds(sim)
    sim.script.add_rules([FaultRule(kind="auth", agent=AGENT, after=3, count=1)])
    execution_id = await run(journal_api, sim, "patched")
    await wait_status(journal_api, execution_id, "paused")

    patch = {"inputs_patch": {"topic": "beavers"}}
    assert (
        await journal_api.post(f"/api/v1/executions/{execution_id}/resume", json=patch)
    ).status_code == 202
    body = await wait_terminal(journal_api, execution_id)

    assert body["status"] == "completed"
    # The very first request names the topic: nothing of the first attempt matches any more.
    assert (len(llm_calls(sim)), len(sim.tool_calls("lookup"))) == (8, 6)
    second = [s["outcome"] for s in await steps(journal_api, execution_id) if s["attempt"] == 2]
    assert "replayed" not in second
    assert body["cost"]["wasted_cost_usd"] > 0  # the first attempt's three paid calls


async def test_spend_and_replays_show_in_metrics_and_the_spend_rule_raises_an_alert(
    journal_api: httpx.AsyncClient, metrics: Metrics, sim: SimulatorServer
) -> None:
    three_tool_rounds(sim)
    sim.script.add_rules([FaultRule(kind="server_error", agent=AGENT, after=3, count=1)])
    execution_id = await run(journal_api, sim, "metrics")
    await wait_terminal(journal_api, execution_id)

    text = metrics.exposition().decode()
    assert 'crewrun_calls_replayed_total{kind="llm"} 3.0' in text
    assert 'crewrun_calls_replayed_total{kind="tool"} 3.0' in text
    assert 'crewrun_llm_tokens_total{direction="in",model="gpt-4o-mini"}' in text
    assert 'crewrun_llm_cost_usd_total{model="gpt-4o-mini"}' in text
    alerts = (await journal_api.get("/api/v1/alerts")).json()["items"]
    cost = (await journal_api.get(f"/api/v1/executions/{execution_id}")).json()["cost"]["cost_usd"]
    assert cost > 0.00005  # the rule's threshold
    assert [a["execution_id"] for a in alerts if a["rule"] == "big-spender"] == [execution_id]


async def test_a_task_without_failures_wastes_nothing_and_lists_every_call(
    journal_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    three_tool_rounds(sim)
    execution_id = await run(journal_api, sim, "clean")
    body = await wait_terminal(journal_api, execution_id)

    timeline = await steps(journal_api, execution_id)
    assert [(s["kind"], s["name"]) for s in timeline] == [("llm", "gpt-4o-mini"), ("tool", "lookup")] * 3 + [
        ("llm", "gpt-4o-mini")
    ]
    assert all(s["outcome"] == "ok" and s["attempt"] == 1 and s["duration_ms"] >= 0 for s in timeline)
    assert body["cost"]["cost_usd"] > 0 and body["cost"]["wasted_cost_usd"] == 0.0
