"""Log lines of a failing execution carry its context, come out as JSON through one pipeline
(crewrun's, Temporal's and CrewAI's), and hold no secret."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from backend.settings import Settings
from backend.simulator.script import FaultRule
from tests.support import SimulatorServer, research_spec, wait_terminal

CANARY = "canary-log-key-8d2f7a61c3e9"
TASK_FIELDS = ("execution_id", "workflow_id", "run_id", "task", "agent", "attempt")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"pause_categories": []})


async def test_every_line_of_a_failing_execution_carries_its_context_and_no_secret(
    api: httpx.AsyncClient, sim: SimulatorServer, captured_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_CANARY_KEY", CANARY)
    sim.script.add_rules(
        [
            FaultRule(kind="server_error", agent="analyst", count=1, status=503),
            FaultRule(
                kind="auth", agent="analyst", count=None, message="Incorrect API key provided: {api_key}"
            ),
        ]
    )
    spec = research_spec(sim.base_url, name="logs", api_key_env="LOG_CANARY_KEY")
    started = await api.post(
        "/api/v1/executions",
        json={"crew": spec, "inputs": {"topic": "x"}},
        headers={"X-Request-ID": "req-test-42"},
    )
    assert started.headers["X-Request-ID"] == "req-test-42"
    done = await wait_terminal(api, started.json()["id"])
    assert done["status"] == "failed"

    text = captured_logs.getvalue()
    assert CANARY not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("execution_id") == done["id"]]
    task_lines = [line for line in mine if "task" in line]
    # CrewAI's own error lines (root logger) and Temporal's activity lines came through too.
    loggers = {line.get("logger") for line in task_lines}
    assert {"root", "temporalio.activity", "activities.crew_activities"} <= loggers, loggers
    for line in task_lines:
        assert all(line.get(field) is not None for field in TASK_FIELDS), line
    failed = [line for line in task_lines if line["event"] == "task.attempt_failed"]
    assert [(f["code"], f["category"], f["severity"]) for f in failed] == [
        ("LLM_PROVIDER_OVERLOADED", "external_service", "medium"),
        ("LLM_AUTH_FAILED", "authentication", "critical"),
    ]
    # Every line of an activity of this execution has its ids, and the API line its request id.
    for line in lines:
        if line.get("logger") in ("activities.crew_activities", "temporalio.activity"):
            assert line.get("execution_id") and line.get("workflow_id") and line.get("run_id"), line
    assert any(line.get("request_id") == "req-test-42" and line["event"] == "api.request" for line in lines)
