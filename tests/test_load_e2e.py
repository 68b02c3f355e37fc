"""Load on the embedded stack: 200 concurrent executions with a 30 % transient and a 10 % permanent
provider fault rate, then the ledger: every execution ended once, DB and Temporal agree, no
duplicate record, counts balance, no provider call beyond its budget."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from backend.db.store import Store
from backend.stack import Stack
from backend.temporal_client import connect
from tests.ledger import calls_by_logical_call, check_ledger
from tests.support import research_spec, stack_settings

pytestmark = [pytest.mark.e2e, pytest.mark.load]
EXECUTIONS = int(os.environ.get("CREWRUN_LOAD_EXECUTIONS", "200"))
FAST = {c: {"initial_interval_s": 0.1, "maximum_interval_s": 0.5} for c in ("external_service", "internal")}


async def test_200_concurrent_executions_under_faults_balance_the_ledger(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWRUN_RETRY", json.dumps(FAST))
    # The breaker has tests of its own; a 30 % fault rate must not park the whole load here.
    monkeypatch.setenv("CREWRUN_BREAKER_ENABLED", "false")
    settings = stack_settings(tmp_path, db_url).model_copy(update={"task_heartbeat_timeout_s": 30})
    stack = Stack(settings)
    stack.start()
    try:
        sim, api_url = stack.simulator_url, stack.api_url
        httpx.post(
            f"{sim}/_sim/faults",
            json={
                "rules": [
                    {"kind": "content_policy", "agent": "*", "count": None, "probability": 0.10},
                    {"kind": "server_error", "agent": "*", "count": None, "probability": 0.30, "status": 503},
                ]
            },
        ).raise_for_status()
        spec = research_spec(lambda a: f"{sim}/agents/{a}/v1", name="load")
        started = time.monotonic()
        with httpx.Client(base_url=api_url, timeout=30) as api:
            crew_id = api.post("/api/v1/crews", json=spec).json()["id"]
            accepted = [
                api.post(
                    "/api/v1/executions", json={"crew_id": crew_id, "inputs": {"topic": f"t{i}"}}
                ).json()["id"]
                for i in range(EXECUTIONS)
            ]
            deadline = time.monotonic() + 600
            pending = set(accepted)
            while pending and time.monotonic() < deadline:
                listed = api.get("/api/v1/executions", params={"crew_id": crew_id, "limit": 500}).json()[
                    "items"
                ]
                pending = {
                    e["id"]
                    for e in listed
                    if e["status"] not in ("completed", "degraded", "failed", "cancelled")
                }
                time.sleep(1)
            assert not pending, f"{len(pending)} executions still running"
            elapsed = time.monotonic() - started
            calls = httpx.get(f"{sim}/_sim/requests").json()["calls"]
        store = Store.from_url(settings.database_url)
        client = await connect(
            settings.model_copy(update={"temporal_address": f"127.0.0.1:{settings.temporal_port}"})
        )
        report = await check_ledger(
            store, client, accepted, max_calls_per_logical_call=6, calls_per_task=calls_by_logical_call(calls)
        )
    finally:
        stack.stop()

    print(f"\nload: {report.line()}; {len(calls)} provider calls; {elapsed:.0f} s")
    assert report.problems == []
    assert report.accepted == EXECUTIONS and report.duplicates == 0
    assert report.by_status["failed"] == report.dead_letters == report.final_records
    assert report.by_status["completed"] + report.by_status["failed"] == EXECUTIONS
    assert report.by_status["failed"] > 0 and report.by_status["completed"] > 0  # both paths exercised
