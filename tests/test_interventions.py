"""Pause, resume, skip, abort and graceful degradation, through the API on the dev server."""

from __future__ import annotations

from typing import Any

import httpx

from backend.simulator.script import FaultRule
from tests.support import SimulatorServer, assert_problem, research_spec, wait_status, wait_terminal


async def start(api: httpx.AsyncClient, spec: dict[str, Any]) -> str:
    response = await api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": "kelp"}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_auth_failure_pauses_and_resume_retries_the_task(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="auth", agent="analyst", count=None)])
    execution_id = await start(api, research_spec(sim.base_url, name="pause"))
    paused = await wait_status(api, execution_id, "paused")
    assert paused["tasks"][1]["error"]["code"] == "LLM_AUTH_FAILED"
    assert paused["tasks"][1]["status"] in ("running", "retrying")  # open for a resume, not failed

    # Wrong-state and wrong-task requests are refused, not ignored.
    assert_problem(
        await api.post(f"/api/v1/executions/{execution_id}/resume", json={"task": "write"}),
        409,
        "EXECUTION_NOT_PAUSED",
    )
    assert_problem(
        await api.post(f"/api/v1/executions/{execution_id}/skip", json={"task": "nope"}), 422, "TASK_UNKNOWN"
    )
    assert_problem(
        await api.post(
            f"/api/v1/executions/{execution_id}/resume", json={"llm_override": {"base_url": "ftp://x"}}
        ),
        422,
        "REQUEST_INVALID",
    )

    sim.script.heal()  # the operator fixed the key
    resumed = await api.post(
        f"/api/v1/executions/{execution_id}/resume", json={"inputs_patch": {"tone": "dry"}}
    )
    assert resumed.status_code == 202
    done = await wait_terminal(api, execution_id)

    assert done["status"] == "completed" and done["gaps"] == []
    assert len(sim.calls("researcher")) == 1  # task 1 ran once in total
    assert len(sim.calls("analyst")) == 2
    assert_problem(await api.post(f"/api/v1/executions/{execution_id}/resume"), 409, "EXECUTION_TERMINAL")


async def test_resume_of_a_running_execution_is_refused(api: httpx.AsyncClient, sim: SimulatorServer) -> None:
    sim.script.add_rules([FaultRule(kind="slow", agent="researcher", delay_s=2)])
    execution_id = await start(api, research_spec(sim.base_url, name="running"))
    await wait_status(api, execution_id, "running")
    assert_problem(await api.post(f"/api/v1/executions/{execution_id}/resume"), 409, "EXECUTION_NOT_PAUSED")
    assert_problem(
        await api.post(f"/api/v1/executions/{execution_id}/skip", json={"task": "research"}),
        409,
        "EXECUTION_NOT_PAUSED",
    )
    assert (await wait_terminal(api, execution_id))["status"] == "completed"


async def test_skip_marks_the_paused_task_and_the_crew_ends_degraded(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="quota", agent="analyst", count=None)])
    execution_id = await start(api, research_spec(sim.base_url, name="skip"))
    await wait_status(api, execution_id, "paused")
    skipped = await api.post(
        f"/api/v1/executions/{execution_id}/skip", json={"task": "analyse", "output": "analysis done by hand"}
    )
    assert skipped.status_code == 202
    done = await wait_terminal(api, execution_id)

    assert done["status"] == "degraded" and done["gaps"] == ["analyse"]
    assert [t["status"] for t in done["tasks"]] == ["completed", "skipped", "completed"]
    assert done["tasks"][1]["output"] == "analysis done by hand"
    assert len(sim.calls("analyst")) == 1 and len(sim.calls("writer")) == 1


async def test_abort_signal_fails_the_paused_execution_into_one_dead_letter(
    api: httpx.AsyncClient, sim: SimulatorServer, temporal_client: Any
) -> None:
    from workflows.contracts import AbortRequest

    sim.script.add_rules([FaultRule(kind="auth", agent="researcher", count=None)])
    execution_id = await start(api, research_spec(sim.base_url, name="abort"))
    paused = await wait_status(api, execution_id, "paused")
    await temporal_client.get_workflow_handle(paused["workflow_id"]).signal(
        "abort", AbortRequest("wrong crew")
    )
    done = await wait_terminal(api, execution_id)

    assert done["status"] == "failed" and done["error"]["code"] == "EXECUTION_ABORTED"
    assert done["tasks"][0]["status"] == "failed"
    letters = [
        d
        for d in (await api.get("/api/v1/dead-letters")).json()["items"]
        if d["execution_id"] == execution_id
    ]
    assert len(letters) == 1


async def test_optional_task_failing_for_good_leaves_a_gap_and_the_crew_continues(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    spec = research_spec(sim.base_url, name="optional")
    spec["tasks"][1]["critical"] = False
    spec["tasks"][2]["context"] = ["research", "analyse"]
    sim.script.add_rules([FaultRule(kind="content_policy", agent="analyst", count=None)])
    done = await wait_terminal(api, await start(api, spec))

    assert done["status"] == "degraded" and done["gaps"] == ["analyse"]
    analyse = done["tasks"][1]
    assert (analyse["status"], analyse["degraded"], analyse["error"]["code"]) == (
        "degraded",
        True,
        "LLM_CONTENT_REFUSED",
    )
    assert done["tasks"][2]["status"] == "completed"
    # The writer saw a marker where the analysis would have been (its prompt is longer than the
    # task alone), and no dead letter was written for a degraded run.
    assert len(sim.calls("writer")) == 1
    letters = [
        d for d in (await api.get("/api/v1/dead-letters")).json()["items"] if d["execution_id"] == done["id"]
    ]
    assert letters == []


async def test_primary_llm_in_outage_falls_back_and_completes_with_no_failed_task(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    spec = research_spec(sim.base_url, name="fallback")
    # The outage hits only the researcher's provider: give it a breaker of its own (all agents
    # share the simulator's host, which would otherwise be one service for the breaker).
    spec["agents"][0]["llm"]["service"] = "primary"
    spec["agents"][0]["fallback_llms"] = [
        {
            "model": "backup-model",
            "base_url": sim.base_url("researcher-backup"),
            "service": "backup",
            "timeout_s": 5,
        }
    ]
    sim.script.start_outage(600, agent="researcher")
    done = await wait_terminal(api, await start(api, spec))

    assert done["status"] == "completed" and done["gaps"] == []
    assert [t["status"] for t in done["tasks"]] == ["completed"] * 3
    assert done["tasks"][0]["model"] == "backup-model"
    assert done["tasks"][1]["model"] == "gpt-4o-mini"
    assert len(sim.calls("researcher-backup")) == 1
    # The primary got its external_service budget (or fewer, once its breaker opened), no more.
    assert 1 <= len(sim.calls("researcher")) <= 6
    errors = (await api.get(f"/api/v1/executions/{done['id']}/errors")).json()["items"]
    assert {e["task"] for e in errors} == {"research"} and all(e["retryable"] for e in errors)
    assert {e["code"] for e in errors} <= {"LLM_PROVIDER_OVERLOADED", "CIRCUIT_OPEN"}


async def test_cancelling_a_paused_execution_ends_it_cancelled_with_one_dead_letter(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    sim.script.add_rules([FaultRule(kind="auth", agent="analyst", count=None)])
    execution_id = await start(api, research_spec(sim.base_url, name="cancel-paused"))
    await wait_status(api, execution_id, "paused")
    # The cancellation lands in the pause (no task attempt is running): still compensated.
    assert (await api.post(f"/api/v1/executions/{execution_id}/cancel")).status_code == 202
    done = await wait_terminal(api, execution_id)

    assert done["status"] == "cancelled"
    letters = [
        d
        for d in (await api.get("/api/v1/dead-letters")).json()["items"]
        if d["execution_id"] == execution_id
    ]
    assert len(letters) == 1 and letters[0]["reason"] == "execution cancelled"
    assert [t["name"] for t in letters[0]["completed_tasks"]] == ["research"]
