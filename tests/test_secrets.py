"""Canary secrets in a provider's error body (and the key itself, echoed back) must appear in no
error event, DB row, log line, API response or Temporal history (read with the real CLI)."""

from __future__ import annotations

import io

import httpx
import pytest
from temporalio.client import Client

from backend.settings import Settings
from backend.simulator.script import FaultRule
from tests.ledger import places_a_secret_could_reach
from tests.support import (
    BODY_SECRET,
    CANARIES,
    KEY,
    QUERY_SECRET,
    SimulatorServer,
    research_spec,
    wait_terminal,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Fail on the 401 instead of pausing for an operator: this test reads the final records.
    return settings.model_copy(update={"pause_categories": []})


async def test_canary_secrets_leak_nowhere(
    api: httpx.AsyncClient,
    sim: SimulatorServer,
    settings: Settings,
    temporal_client: Client,
    captured_logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANARY_PROVIDER_KEY", KEY)
    sim.script.add_rules(
        [
            FaultRule(
                kind="auth",
                agent="analyst",
                count=None,
                message=f"Incorrect API key provided: {{api_key}}. Debug: Bearer {BODY_SECRET} "
                f"at https://llm.example/v1?api_key={QUERY_SECRET}&x=1",
            )
        ]
    )
    spec = research_spec(sim.base_url, name="canary", api_key_env="CANARY_PROVIDER_KEY")
    started = await api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": "leaks"}})
    execution = await wait_terminal(api, started.json()["id"])
    assert execution["status"] == "failed"
    # The provider really received the key and echoed it: the canary was in play.
    assert sim.calls("analyst")[0]["status"] == 401

    places = await places_a_secret_could_reach(
        api, temporal_client, settings.database_url, [execution["id"]], captured_logs.getvalue()
    )
    errors = (await api.get(f"/api/v1/executions/{execution['id']}/errors")).json()["items"]

    for place, content in places.items():
        # (The in-process test worker's metrics are not the API's /metrics: no trace expected there.)
        assert place == "metrics" or "LLM_AUTH_FAILED" in content, (
            f"{place} holds no trace of the failure: the check would be vacuous"
        )
        for canary in CANARIES:
            assert canary not in content, f"{canary} leaked into {place}"
    assert [e["code"] for e in errors] == ["LLM_AUTH_FAILED"]
    assert "[REDACTED]" in errors[0]["message"]
