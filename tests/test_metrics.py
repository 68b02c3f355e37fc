"""/metrics after a scripted run: exact counter values, low-cardinality labels, shared-state gauges."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from backend.api.app import create_app
from backend.metrics import Metrics
from backend.settings import Settings
from backend.simulator.script import FaultRule
from backend.worker_factory import build_worker
from tests.support import SimulatorServer, research_spec, wait_terminal


@pytest.fixture
async def metered_api(temporal_client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    metrics = Metrics()  # API and worker share one registry in this process, as a test can read it
    app = create_app(settings, temporal_client=temporal_client, reconcile=False, metrics=metrics)
    worker = build_worker(temporal_client, settings, metrics=metrics)
    async with (
        app.router.lifespan_context(app),
        worker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_after_a_scripted_run_read_exactly(
    metered_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    api = metered_api
    sim.script.add_rules(
        [
            FaultRule(kind="server_error", agent="researcher", count=2, status=503),
            FaultRule(kind="content_policy", agent="writer", count=1),
        ]
    )
    ok = (
        await api.post(
            "/api/v1/executions",
            json={"crew": research_spec(sim.base_url, name="m1"), "inputs": {"topic": "a"}},
        )
    ).json()
    done = await wait_terminal(api, ok["id"])
    assert done["status"] == "failed"  # the writer's refusal is the first run's last task

    response = await api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)

    overloaded = (
        ("category", "external_service"),
        ("code", "LLM_PROVIDER_OVERLOADED"),
        ("service", "127.0.0.1"),
        ("severity", "medium"),
    )
    refused = (
        ("category", "content_policy"),
        ("code", "LLM_CONTENT_REFUSED"),
        ("service", "127.0.0.1"),
        ("severity", "medium"),
    )
    assert got[("crewrun_errors_total", overloaded)] == 2
    assert got[("crewrun_errors_total", refused)] == 1
    assert got[("crewrun_retries_total", (("category", "external_service"),))] == 2
    assert ("crewrun_retries_total", (("category", "content_policy"),)) not in got
    assert got[("crewrun_executions_finished_total", (("status", "failed"),))] == 1
    assert got[("crewrun_dead_letters_total", ())] == 1
    assert got[("crewrun_open_dead_letters", ())] == 1
    assert got[("crewrun_paused_executions", ())] == 0
    assert got[("crewrun_circuit_breaker_state", (("service", "127.0.0.1"),))] == 0
    # Attempts: 2 failed + 3 completed... of which the writer's failed: 3 failures, 2 successes.
    assert got[("crewrun_task_attempt_duration_seconds_count", (("outcome", "failed"),))] == 3
    assert got[("crewrun_task_attempt_duration_seconds_count", (("outcome", "completed"),))] == 2
    assert (
        got[
            (
                "crewrun_http_requests_total",
                (("method", "POST"), ("route", "/api/v1/executions"), ("status", "202")),
            )
        ]
        == 1
    )
    # Route templates, never ids, as labels.
    assert not any(
        execution_id in label for (_, labels) in got for _, label in labels for execution_id in (ok["id"],)
    )
