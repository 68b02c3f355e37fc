"""Canary secrets in a provider's error body (and the key itself, echoed back) must appear in no
error event, DB row, log line, API response or Temporal history (read with the real CLI)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text
from temporalio.client import Client

from backend.logging_setup import build_handler, configure_logging
from backend.settings import Settings
from backend.simulator.script import FaultRule
from tests.support import SimulatorServer, research_spec, tool_path
from tests.test_api import wait_terminal

KEY = "canary-key-5e1f0c2a9b7d4e36"  # the provider key: not shaped like one
BODY_SECRET = "sk-canarybody0123456789abcdef"
QUERY_SECRET = "canaryquery4c3b2a19"
CANARIES = (KEY, BODY_SECRET, QUERY_SECRET)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Fail on the 401 instead of pausing for an operator: this test reads the final records.
    return settings.model_copy(update={"pause_categories": []})


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    configure_logging("json")  # the services' configuration: structlog through the stdlib, redacted
    buffer = io.StringIO()
    handler = build_handler(True, buffer)
    logging.getLogger().addHandler(handler)
    yield buffer
    logging.getLogger().removeHandler(handler)


def _all_rows(db_url: str) -> str:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        dump = [
            repr(list(conn.execute(text(f'SELECT * FROM "{t}"')))) for t in inspect(engine).get_table_names()
        ]
    engine.dispose()
    return "\n".join(dump)


async def test_canary_secrets_leak_nowhere(
    api: httpx.AsyncClient,
    sim: SimulatorServer,
    settings: Settings,
    temporal_client: Client,
    captured_logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANARY_PROVIDER_KEY", KEY)
    sim.script.add_rules([FaultRule(
        kind="auth", agent="analyst", count=None,
        message=f"Incorrect API key provided: {{api_key}}. Debug: Bearer {BODY_SECRET} "
                f"at https://llm.example/v1?api_key={QUERY_SECRET}&x=1",
    )])  # fmt: skip
    spec = research_spec(sim.base_url, name="canary", api_key_env="CANARY_PROVIDER_KEY")
    started = await api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": "leaks"}})
    execution = await wait_terminal(api, started.json()["id"])
    assert execution["status"] == "failed"
    # The provider really received the key and echoed it: the canary was in play.
    assert sim.calls("analyst")[0]["status"] == 401

    responses = [
        (await api.get(path)).text
        for path in (
            f"/api/v1/executions/{execution['id']}",
            f"/api/v1/executions/{execution['id']}/errors",
            f"/api/v1/executions/{execution['id']}/logs",
            "/api/v1/executions",
        )
    ]
    history = subprocess.run(
        [
            tool_path("temporal"),
            "workflow",
            "show",
            "--workflow-id",
            execution["workflow_id"],
            "--output",
            "json",
            "--address",
            temporal_client.service_client.config.target_host,
            "--namespace",
            temporal_client.namespace,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    places = {
        "db": _all_rows(settings.database_url),
        "api": "\n".join(responses),
        "history": history,
        "logs": captured_logs.getvalue(),
    }

    for place, content in places.items():
        assert "LLM_AUTH_FAILED" in content, (
            f"{place} holds no trace of the failure: the check would be vacuous"
        )
        for canary in CANARIES:
            assert canary not in content, f"{canary} leaked into {place}"
    errors = json.loads(responses[1])["items"]
    assert [e["code"] for e in errors] == ["LLM_AUTH_FAILED"]
    assert "[REDACTED]" in errors[0]["message"]
