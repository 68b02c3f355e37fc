"""A client written against CrewAI's hosted API (kickoff, status polling, resume with human
feedback, its task and crew webhooks) runs a crew on crewrun, at /crewai/{crew_name}."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from backend.api.app import create_app
from backend.settings import CrewSetting, Settings
from backend.worker_factory import build_worker
from tests.support import SimulatorServer, WebhookReceiver, poll_intervals

SECRET = "crewai-hook-secret-91c2"


def signed_as_crewai_signs(request: dict[str, Any]) -> bool:
    """CrewAI's HITL webhook scheme: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>."""
    headers = request["headers"]
    signed = headers["x-crewai-timestamp"].encode() + b"." + request["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-crewai-signature"], expected)


class CrewAIClient:
    """What a client of a CrewAI deployment does, reading `status` or `state` as CrewAI's own
    tools do (the two differ between CrewAI's description and its service)."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http, self.base = http, base

    async def inputs(self) -> list[str]:
        return list((await self.http.get(f"{self.base}/inputs")).json()["inputs"])

    async def kickoff(self, inputs: dict[str, Any], **webhooks: str) -> str:
        answer = await self.http.post(
            f"{self.base}/kickoff", json={"inputs": inputs, "meta": {"requestId": "r-1"}, **webhooks}
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["kickoff_id"])

    async def status(self, kickoff_id: str) -> dict[str, Any]:
        return dict((await self.http.get(f"{self.base}/status/{kickoff_id}")).json())

    async def wait_for(self, kickoff_id: str, *states: str) -> dict[str, Any]:
        for pause in poll_intervals():
            found = await self.status(kickoff_id)
            if found.get("state", found.get("status", "")).upper() in states:
                return found
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def resume(self, kickoff_id: str, task_id: str, feedback: str, approve: bool) -> httpx.Response:
        body = {
            "execution_id": kickoff_id,
            "task_id": task_id,
            "human_feedback": feedback,
            "is_approve": approve,
        }
        return await self.http.post(f"{self.base}/resume", json=body)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver().start()
    yield hooks
    hooks.stop()


@pytest.fixture
async def crewai(
    temporal_client: Client, settings: Settings, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CrewAIClient]:
    monkeypatch.setenv("CREWRUN_TEST_SIM_URL", sim.url)
    settings = settings.model_copy(
        update={
            "crews": {"reviewed": CrewSetting(ref="tests.crews.crews:reviewed_crew")},
            "webhook_retry_max_interval_s": 1.0,
        }
    )
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    async with (
        app.router.lifespan_context(app),
        build_worker(temporal_client, settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        yield CrewAIClient(http, "/crewai/reviewed")


async def test_a_crewai_client_kicks_off_polls_and_resumes_with_feedback(
    crewai: CrewAIClient, receiver: WebhookReceiver, sim: SimulatorServer
) -> None:
    assert await crewai.inputs() == ["topic"]
    kickoff_id = await crewai.kickoff(
        {"topic": "kelp"},
        taskWebhookUrl=receiver.url("task"),
        crewWebhookUrl=receiver.url("crew"),
        webhookSecret=SECRET,
    )

    waiting = await crewai.wait_for(kickoff_id, "PENDING_HUMAN_INPUT")
    assert waiting["status"] == "pending_human_input" and waiting["current_task"] == "task_1"
    assert waiting["progress"] == {"completed_tasks": 0, "total_tasks": 1} and waiting["task_output"]
    retried = await crewai.resume(kickoff_id, "task_1", "cite the kelp forests", approve=False)
    assert retried.json() == {"status": "retrying", "message": "Task will be retried with your feedback"}
    for pause in poll_intervals():  # the second run of the task waits in turn
        if (
            len(sim.llm_calls("writer")) == 2
            and (await crewai.status(kickoff_id))["state"] == "PENDING_HUMAN_INPUT"
        ):
            break
        await asyncio.sleep(pause)
    assert "cite the kelp forests" in sim.llm_calls("writer")[1]["prompt"]
    approved = await crewai.resume(kickoff_id, "task_1", "", approve=True)
    assert approved.json() == {"status": "resumed", "message": "Execution resumed successfully"}

    done = await crewai.wait_for(kickoff_id, "SUCCESS", "FAILED")
    assert done["status"] == "completed" and done["state"] == "SUCCESS"
    [task] = done["result"]["tasks"]
    assert (
        task["task_id"] == "task_1"
        and task["agent"] == "Writer"
        and task["output"] == done["result"]["output"]
    )
    assert done["execution_time"] > 0

    for pause in poll_intervals():  # the crew webhook comes last
        if receiver.events("crew"):
            break
        await asyncio.sleep(pause)
    task_events = receiver.events("task")
    assert [e["status"] for e in task_events] == ["pending_human_input", "pending_human_input", "completed"]
    assert all(e["kickoff_id"] == kickoff_id and e["meta"] == {"requestId": "r-1"} for e in task_events)
    assert all(signed_as_crewai_signs(r) for r in receiver.received)
    [crew_event] = receiver.events("crew")
    assert crew_event["kickoff_id"] == kickoff_id and crew_event["result"] == done["result"]["output"]
    assert crew_event["token_usage"]["total_tokens"] > 0


async def test_crewai_clients_get_crewais_error_shapes(crewai: CrewAIClient) -> None:
    http = crewai.http
    missing = await http.post(f"{crewai.base}/kickoff", json={"inputs": {}})
    assert (missing.status_code, missing.json()) == (
        422,
        {
            "error": "Validation Error",
            "message": "Missing required inputs",
            "details": {"missing_inputs": ["topic"]},
        },
    )
    unknown = await http.post("/crewai/no-such-crew/kickoff", json={"inputs": {}})
    assert unknown.status_code == 404 and unknown.json()["error"] == "Not Found"
    lost = await http.get(f"{crewai.base}/status/00000000-0000-0000-0000-000000000000")
    assert lost.status_code == 404 and lost.json()["error"] == "Execution not found"
    kickoff_id = await crewai.kickoff({"topic": "reefs"})
    await crewai.wait_for(kickoff_id, "PENDING_HUMAN_INPUT")
    wrong_task = await crewai.resume(kickoff_id, "no-such-task", "", approve=True)
    assert wrong_task.status_code == 404
    assert (await crewai.resume(kickoff_id, "task_1", "", approve=True)).status_code == 200
    await crewai.wait_for(kickoff_id, "SUCCESS")
    again = await crewai.resume(kickoff_id, "task_1", "", approve=True)
    assert (again.status_code, again.json()["error"]) == (400, "Invalid Request")
