"""Webhooks of executions, through the API on the dev server: every event delivered once (by its
id), in order per execution, signed, even to a receiver that refuses for 30 s; the secret is never
stored in clear."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from backend.api.app import create_app
from backend.settings import Settings
from backend.worker_factory import build_worker
from tests.ledger import _all_rows
from tests.support import SimulatorServer, WebhookReceiver, assert_problem, poll_intervals, research_spec

SECRET = "whsec-canary-3f9a1c7e5b2d"
REFUSE_S = 30.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = time.monotonic()
    hooks = WebhookReceiver(refusing=lambda: time.monotonic() - started < REFUSE_S).start()
    yield hooks
    hooks.stop()


@pytest.fixture
async def hook_api(temporal_client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # A refused delivery is tried again after at most 2 s (30 s by default).
    settings = settings.model_copy(update={"webhook_retry_max_interval_s": 2.0})
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    async with (
        app.router.lifespan_context(app),
        build_worker(temporal_client, settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


def signed_correctly(request: dict[str, Any]) -> bool:
    timestamp, given = (
        part.split("=", 1)[1] for part in request["headers"]["x-crewrun-signature"].split(",")
    )
    expected = hmac.new(
        SECRET.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(given, expected)


async def test_a_receiver_down_for_30_s_gets_every_event_of_10_executions_once_in_order_signed(
    hook_api: httpx.AsyncClient, receiver: WebhookReceiver, sim: SimulatorServer, settings: Settings
) -> None:
    webhook = {
        "url": receiver.url(),
        "events": ["task_completed", "step", "execution_finished"],
        "secret": SECRET,
    }
    ids = []
    for i in range(10):
        body = {
            "crew": research_spec(sim.base_url, name=f"hooked-{i}"),
            "inputs": {"topic": f"t{i}"},
            "webhooks": webhook,
        }
        started = await hook_api.post("/api/v1/executions", json=body)
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])

    expected = 10 * (3 + 3 + 1)  # per execution: 3 tasks, 3 LLM calls (steps), its end
    deadline = time.monotonic() + REFUSE_S + 60
    for pause in poll_intervals(most_s=1.0):
        if len(receiver.received) >= expected:
            break
        assert time.monotonic() < deadline, f"{len(receiver.received)} of {expected} events"
        await asyncio.sleep(pause)
    await asyncio.sleep(1.0)  # nothing more comes after the last one

    events = receiver.events()
    assert receiver.refused > 0  # it was down, and deliveries were tried meanwhile
    assert len(events) == expected
    assert len({e["id"] for e in events}) == expected  # once each
    assert all(signed_correctly(r) for r in receiver.received)
    per_execution: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        per_execution[event["execution_id"]].append(event)
    assert set(per_execution) == set(ids)
    for stream in per_execution.values():
        assert [e["sequence"] for e in stream] == sorted(e["sequence"] for e in stream)  # in order
        kinds = [e["type"] for e in stream]
        assert kinds.count("task_completed") == 3 and kinds.count("step") == 3
        assert kinds[-1] == "execution_finished" and stream[-1]["data"]["status"] == "completed"
        first_task = next(e for e in stream if e["type"] == "task_completed")
        assert first_task["data"]["task"] == "research" and first_task["data"]["output"]
    assert SECRET not in _all_rows(settings.database_url)  # sealed at rest


async def test_webhooks_must_name_an_http_url_known_events_and_a_real_secret(
    hook_api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    spec = research_spec(sim.base_url, name="bad-hooks")
    for webhooks in (
        {"url": "file:///etc/passwd"},
        {"url": "http://user:pw@example.com/h"},
        {"url": "http://example.com/h", "events": ["everything"]},
        {"url": "http://example.com/h", "secret": "short"},
        [{"url": "http://example.com/h"}] * 6,
    ):
        answer = await hook_api.post(
            "/api/v1/executions", json={"crew": spec, "inputs": {"topic": "x"}, "webhooks": webhooks}
        )
        assert_problem(answer, 422, "REQUEST_INVALID")
