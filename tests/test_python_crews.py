"""Python crews with tools on a worker, through the API, on the dev server: the user's own CrewAI
objects (tools, structured outputs, hierarchical managers, human review, async tasks) run one
activity per task, every tool call behind the tool boundary."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.python_crews import CrewNotSupported, load_crew
from backend.api.app import create_app
from backend.db.store import Store
from backend.settings import CrewSetting, Settings, ToolSetting
from backend.simulator.script import FaultRule
from backend.worker_factory import build_worker
from tests.crews.crews import Finding
from tests.ledger import check_ledger
from tests.support import (
    SimulatorServer,
    assert_problem,
    poll_intervals,
    tool_path,
    wait_status,
    wait_terminal,
)

CREWS = {
    "structured": "tests.crews.crews:structured_crew",
    "tools": "tests.crews.crews:tool_crew",
    "react-tools": "tests.crews.crews:react_tool_crew",
    "managed": "tests.crews.crews:hierarchical_crew",
    "reviewed": "tests.crews.crews:reviewed_crew",
    "parallel": "tests.crews.crews:async_crew",
    "planning": "tests.crews.crews:memory_crew",
    "broken": "tests.crews.crews:broken_crew",
}


@pytest.fixture
def crew_settings(settings: Settings, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CREWRUN_TEST_SIM_URL", sim.url)
    return settings.model_copy(
        update={
            "crews": {name: CrewSetting(ref=ref) for name, ref in CREWS.items()},
            "tools": {"lookup": ToolSetting(ref="tests.crews.tools:LookupTool")},
            "breaker_consecutive_failures": 2,
            "breaker_cooldown_s": 1.0,
        }
    )


@pytest.fixture
async def crew_api(temporal_client: Client, crew_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _api(temporal_client, crew_settings):
        yield client


async def _api(temporal_client: Client, crew_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker carrying the test crews; every execution the API accepted is checked
    by the ledger when the test is over."""
    app = create_app(crew_settings, temporal_client=temporal_client, reconcile=False)
    worker = build_worker(temporal_client, crew_settings)
    accepted: list[str] = []

    async def remember(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path == "/api/v1/executions":
            await response.aread()
            if response.status_code == 202:
                accepted.append(response.json()["id"])

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        worker,
        httpx.AsyncClient(
            transport=transport, base_url="http://api", event_hooks={"response": [remember]}
        ) as client,
    ):
        yield client
        report = await check_ledger(Store.from_url(crew_settings.database_url), temporal_client, accepted)
        assert report.problems == [], report.line()


async def start(api: httpx.AsyncClient, crew: str, topic: str = "kelp") -> str:
    response = await api.post("/api/v1/executions", json={"crew_name": crew, "inputs": {"topic": topic}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def errors_of(api: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    return list((await api.get(f"/api/v1/executions/{execution_id}/errors")).json()["items"])


async def test_a_worker_registers_its_crews_and_refuses_what_it_cannot_run(
    crew_api: httpx.AsyncClient, crew_settings: Settings
) -> None:
    crews = {c["name"]: c for c in (await crew_api.get("/api/v1/crews")).json()["items"]}

    assert set(crews) == set(CREWS) - {"planning", "broken"}  # refused or failing: not registered
    structured = crews["structured"]
    assert structured["source"] == "python" and structured["inputs"] == ["topic"]
    assert structured["spec"]["reference"] == CREWS["structured"] and structured["spec"]["code_version"]
    assert [t["output_format"] for t in structured["spec"]["tasks"]] == ["pydantic", "raw"]
    assert [t["context"] for t in structured["spec"]["tasks"]] == [None, ["task_1"]]
    tools = crews["tools"]["spec"]["agents"][0]
    assert tools["name"] == "Searcher" and tools["tools"] == ["lookup", "count"]
    assert crews["managed"]["spec"]["process"] == "hierarchical"
    assert crews["reviewed"]["spec"]["tasks"][0]["human_input"] is True
    assert [t["async_execution"] for t in crews["parallel"]["spec"]["tasks"]] == [True, True, False]
    assert [t["name"] for t in (await crew_api.get("/api/v1/tools")).json()] == ["lookup"]

    missing = await crew_api.post("/api/v1/executions", json={"crew_name": "structured", "inputs": {}})
    assert assert_problem(missing, 422, "CREW_SPEC_INVALID")["errors"][0]["loc"] == ["inputs", "topic"]
    unknown = await crew_api.post(
        "/api/v1/executions", json={"crew_name": "planning", "inputs": {"topic": "x"}}
    )
    assert_problem(unknown, 404, "CREW_NOT_FOUND")
    inline = {"crew": {**structured["spec"], "name": "copy"}, "inputs": {"topic": "x"}}
    assert_problem(await crew_api.post("/api/v1/executions", json=inline), 422, "REQUEST_INVALID")


async def test_a_crew_that_fails_to_build_is_logged_redacted_and_the_others_are_served(
    temporal_client: Client, crew_settings: Settings
) -> None:
    worker = build_worker(temporal_client, crew_settings)
    crews = worker.runner.crews  # type: ignore[attr-defined]

    assert "structured" in crews.crews
    assert crews.failed["planning"].startswith("CrewNotSupported: not supported by crewrun yet: planning")
    assert "RuntimeError: this crew's module is broken" in crews.failed["broken"]

    # Options for an agent the crew does not have are a typo that would drop a fallback: refused.
    typo = CrewSetting.model_validate(
        {"ref": CREWS["tools"], "agents": {"searcher": {"fallback_llms": [{"model": "gpt-4o-mini"}]}}}
    )
    with pytest.raises(
        CrewNotSupported, match=r"agents it does not have: searcher \(its agents: Searcher, Reporter\)"
    ):
        load_crew("tools", typo, {})
    assert "sk-live-abcdefghijklmnop0123456789" not in crews.failed["broken"]


async def test_a_structured_output_is_checkpointed_and_reaches_the_next_task_and_the_result(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    execution_id = await start(crew_api, "structured", "otters")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed", body
    first, second = body["tasks"]
    assert first["output_format"] == "pydantic"
    finding = Finding.model_validate(first["json_dict"])
    assert finding.facts and "otters" in finding.topic
    assert body["result"]["raw"] == second["output"]
    assert [t["name"] for t in body["result"]["tasks_output"]] == ["task_1", "task_2"]
    # The second task saw the first one's output (its context), read back from the checkpoint.
    assert finding.topic in sim.llm_calls("writer")[0]["prompt"]
    assert [len(sim.llm_calls(a)) for a in ("finder", "writer")] == [1, 1]


async def test_a_tool_is_called_once_per_logical_call_and_its_answer_reaches_the_output(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    execution_id = await start(crew_api, "tools", "tides")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed"
    [call] = sim.tool_calls("lookup")
    assert json.loads(call["args"])["query"].startswith("searcher")
    assert call["status"] == 200 and "[lookup] result" in body["tasks"][0]["output"]
    logs = (await crew_api.get(f"/api/v1/executions/{execution_id}/logs")).json()["items"]
    completed = [x["data"] for x in logs if x["event"] == "task.completed" and x["task"] == "task_1"]
    assert completed == [{"llm_calls": 2, "tool_calls": 1, "tool_errors_told": 0}]


@pytest.mark.parametrize("crew", ["tools", "react-tools"])
async def test_a_failing_tool_fails_the_attempt_once_and_the_retry_calls_it_once_more(
    crew_api: httpx.AsyncClient, sim: SimulatorServer, crew: str
) -> None:
    # CrewAI alone would hand the error to the LLM (native) or call the tool six times (ReAct).
    sim.script.add_rules([FaultRule(kind="server_error", tool="lookup", count=1)])
    execution_id = await start(crew_api, crew, "tides")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed" and body["tasks"][0]["attempts"] == 2
    assert [c["status"] for c in sim.tool_calls("lookup")] == [503, 200]  # 1.00 call per logical call
    [event] = await errors_of(crew_api, execution_id)
    assert (event["code"], event["category"], event["tool"], event["service"]) == (
        "TOOL_SERVICE_ERROR",
        "external_service",
        "lookup",
        "reference-api",
    )
    # The call that chose the tool was paid for once: attempt 2 was served it from the journal.
    assert len(sim.llm_calls("searcher")) == 2


async def test_arguments_the_tools_service_rejects_are_told_to_the_agent_without_a_retry(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="bad_request", tool="lookup", count=1)])
    execution_id = await start(crew_api, "tools", "tides")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed" and body["tasks"][0]["attempts"] == 1
    assert await errors_of(crew_api, execution_id) == []
    assert [c["status"] for c in sim.tool_calls("lookup")] == [400]
    second = sim.llm_calls("searcher")[1]["prompt"]
    assert "Error executing tool" in second and "TOOL_ARGUMENTS_INVALID" in second
    logs = (await crew_api.get(f"/api/v1/executions/{execution_id}/logs")).json()["items"]
    told = [
        x["data"]["tool_errors_told"]
        for x in logs
        if x["event"] == "task.completed" and x["task"] == "task_1"
    ]
    assert told == [1]


async def test_arguments_that_break_the_tools_schema_never_reach_its_service(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    httpx.post(f"{sim.url}/_sim/agents/searcher", json={"bad_arguments": 1}).raise_for_status()
    execution_id = await start(crew_api, "tools", "tides")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed" and body["tasks"][0]["attempts"] == 1
    assert [c["status"] for c in sim.tool_calls("lookup")] == [200]  # only the corrected call
    assert "arguments validation failed" in sim.llm_calls("searcher")[1]["prompt"]


async def test_a_tools_refused_key_pauses_the_execution_and_a_resume_completes_it(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="auth", tool="lookup", count=1)])
    execution_id = await start(crew_api, "tools", "tides")
    paused = await wait_status(crew_api, execution_id, "paused")

    assert paused["tasks"][0]["error"]["code"] == "TOOL_AUTH_FAILED"
    assert paused["tasks"][0]["error"]["tool"] == "lookup"
    resumed = await crew_api.post(f"/api/v1/executions/{execution_id}/resume", json={})
    assert resumed.status_code == 202, resumed.text
    body = await wait_terminal(crew_api, execution_id)
    assert body["status"] == "completed"
    assert [c["status"] for c in sim.tool_calls("lookup")] == [401, 200]


async def test_a_tool_services_outage_opens_its_breaker_only_and_parked_executions_finish(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="server_error", tool="lookup", count=None)])  # down until healed
    ids = [await start(crew_api, "tools", f"tides {i}") for i in range(3)]

    async def breaker(service: str) -> dict[str, Any] | None:
        states = {b["service"]: b for b in (await crew_api.get("/api/v1/circuit-breakers")).json()}
        return states.get(service)

    async def parked() -> bool:  # an attempt found the breaker open and waits for its probe
        codes = [e["code"] for i in ids for e in await errors_of(crew_api, i)]
        return "CIRCUIT_OPEN" in codes

    for pause in poll_intervals():
        if (opened := await breaker("reference-api")) and opened["state"] != "closed" and await parked():
            break
        await asyncio.sleep(pause)
    assert (await breaker("127.0.0.1") or {}).get("state") == "closed"  # the LLM's own is unaffected
    calls_while_open = len(sim.tool_calls("lookup"))
    sim.script.heal()
    bodies = [await wait_terminal(crew_api, i, timeout_s=60) for i in ids]

    assert [b["status"] for b in bodies] == ["completed"] * 3
    assert (await breaker("reference-api") or {})["state"] == "closed"  # a probe closed it
    codes = {e["code"] for i in ids for e in await errors_of(crew_api, i)}
    assert codes == {"CIRCUIT_OPEN", "TOOL_SERVICE_ERROR"}
    # While it was open the executions waited instead of calling: after the heal, one probe and
    # then one call per execution. With a 1 s cooldown a half-open probe may still meet the outage
    # in the instant between counting and healing, so at most one 503 may precede them.
    after = [c["status"] for c in sim.tool_calls("lookup")[calls_while_open:]]
    assert after in ([200] * 3, [503] + [200] * 3), after
    assert all(b["tasks"][1]["attempts"] == 1 for b in bodies)  # the reporter never saw it


async def test_a_hierarchical_crews_manager_delegates_inside_the_tasks_activity(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    execution_id = await start(crew_api, "managed", "reefs")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed"
    assert [t["agent"] for t in body["tasks"]] == ["manager", "manager"]
    assert len(sim.llm_calls("manager")) == 4  # per task: delegate, then answer
    assert len(sim.llm_calls("researcher")) == 4  # delegated twice: tool call, answer
    assert len(sim.tool_calls("lookup")) == 2


async def test_a_human_input_task_waits_for_a_person_rejected_over_the_api_approved_over_the_cli(
    crew_api: httpx.AsyncClient, crew_settings: Settings, temporal_client: Client, sim: SimulatorServer
) -> None:
    execution_id = await start(crew_api, "reviewed", "kelp")
    waiting = await wait_status(crew_api, execution_id, "awaiting_feedback")
    assert waiting["tasks"][0]["status"] == "awaiting_feedback" and waiting["tasks"][0]["output"]

    wrong = {"task": "nope", "approve": True}
    assert_problem(
        await crew_api.post(f"/api/v1/executions/{execution_id}/feedback", json=wrong), 422, "TASK_UNKNOWN"
    )
    rejected = await crew_api.post(
        f"/api/v1/executions/{execution_id}/feedback",
        json={"task": "task_1", "approve": False, "feedback": "mention the spring tides", "revision": 0},
    )
    assert rejected.status_code == 202, rejected.text
    for pause in poll_intervals():  # the second run's output, waiting in turn
        again = (await crew_api.get(f"/api/v1/executions/{execution_id}")).json()
        if again["status"] == "awaiting_feedback" and again["tasks"][0]["revision"] == 1:
            break
        await asyncio.sleep(pause)
    # A second reviewer who read the first output approves it: refused, the revised one still waits.
    late = {"task": "task_1", "approve": True, "revision": 0}
    assert_problem(
        await crew_api.post(f"/api/v1/executions/{execution_id}/feedback", json=late),
        409,
        "FEEDBACK_REVISION_STALE",
    )
    still = (await crew_api.get(f"/api/v1/executions/{execution_id}")).json()
    assert (still["status"], still["tasks"][0]["revision"]) == ("awaiting_feedback", 1)
    prompts = [c["prompt"] for c in sim.llm_calls("writer")]
    assert len(prompts) == 2 and "mention the spring tides" not in prompts[0]
    assert "User feedback: mention the spring tides" in prompts[1]

    workflow_id = waiting["workflow_id"]
    approve = json.dumps({"task": "task_1", "approve": True})
    address = temporal_client.service_client.config.target_host
    signal = ["workflow", "signal", "--workflow-id", workflow_id, "--name", "feedback", "--input", approve]
    subprocess.run([tool_path("temporal"), *signal, "--address", address], check=True, timeout=30)
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed" and body["tasks"][0]["status"] == "completed"
    decisions = [(f["revision"], f["approved"], f["feedback"]) for f in body["tasks"][0]["feedback"]]
    assert decisions == [(0, False, "mention the spring tides"), (1, True, "")]
    assert_problem(
        await crew_api.post(
            f"/api/v1/executions/{execution_id}/feedback", json={"task": "task_1", "approve": True}
        ),
        409,
        "EXECUTION_TERMINAL",
    )


async def test_consecutive_async_tasks_run_as_concurrent_activities_joined_before_the_next(
    crew_api: httpx.AsyncClient, temporal_client: Client, sim: SimulatorServer
) -> None:
    execution_id = await start(crew_api, "parallel", "waves")
    body = await wait_terminal(crew_api, execution_id)

    assert body["status"] == "completed"
    history = await temporal_client.get_workflow_handle(body["workflow_id"]).fetch_history()
    kinds = [
        e.event_type
        for e in history.events
        if e.event_type
        in (EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    ]
    scheduled, completed = (
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    )
    assert kinds[:2] == [scheduled, scheduled]  # both async tasks before either finished
    assert kinds[2:] == [completed, completed, scheduled, completed]  # the third after both
    joined = sim.llm_calls("gamma")[0]["prompt"]
    assert "[alpha] findings" in joined and "[beta] findings" in joined


async def test_json_specs_may_name_registry_tools_only(
    crew_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    spec = {
        "name": "json-tools",
        "agents": [
            {
                "name": "searcher",
                "role": "Searcher",
                "goal": "Look up {topic}",
                "llm": {"model": "gpt-4o-mini", "base_url": f"{sim.url}/agents/searcher/v1"},
                "tools": ["lookup"],
            }
        ],
        "tasks": [
            {"name": "search", "description": "Look up {topic}", "expected_output": "x", "agent": "searcher"}
        ],
    }
    unknown = {**spec, "agents": [{**spec["agents"][0], "tools": ["os_system"]}]}
    refused = await crew_api.post("/api/v1/crews", json=unknown)
    assert assert_problem(refused, 422, "TOOL_UNKNOWN")["errors"][0]["loc"] == ["agents", 0, "tools", 0]

    created = await crew_api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": "tides"}})
    assert created.status_code == 202, created.text
    body = await wait_terminal(crew_api, created.json()["id"])
    assert body["status"] == "completed"
    assert [c["status"] for c in sim.tool_calls("lookup")] == [200]


async def test_a_python_crews_agent_moves_to_its_configured_fallback_llm(
    temporal_client: Client, crew_settings: Settings, sim: SimulatorServer
) -> None:
    # The crew's code builds the searcher's LLM; the deployment's settings give it a fallback.
    fallback = {"model": "gpt-4o-mini", "base_url": sim.base_url("backup")}
    crews = dict(crew_settings.crews)
    crews["tools"] = CrewSetting.model_validate(
        {"ref": CREWS["tools"], "agents": {"Searcher": {"fallback_llms": [fallback]}}}
    )
    settings = crew_settings.model_copy(update={"crews": crews})
    sim.script.add_rules(
        [FaultRule(kind="quota", agent="searcher", count=None)]
    )  # its provider's quota is gone
    async for api in _api(temporal_client, settings):
        execution_id = await start(api, "tools", "tides")
        body = await wait_terminal(api, execution_id)

    assert body["status"] == "completed"
    assert len(sim.llm_calls("searcher")) == 1 and len(sim.llm_calls("backup")) == 2  # tool call, answer
    [event] = (
        Store.from_url(settings.database_url).list_error_events(execution_id, limit=10, cursor=None).items
    )
    assert event.code == "LLM_QUOTA_EXHAUSTED" and event.service == "127.0.0.1"
