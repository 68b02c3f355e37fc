"""Alerts: one per incident after dedup, delivered durably to a real webhook receiver on loopback
that is down for 30 s, and stored with their delivery status."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from backend.alerts import AlertRule
from backend.api.app import create_app
from backend.settings import Settings
from backend.simulator.script import FaultRule
from backend.worker_factory import build_worker
from tests.support import SimulatorServer, free_port, research_spec, wait_terminal

OUTAGE_S = 30


class WebhookReceiver:
    """A real HTTP receiver; answers 503 while ``down_until`` is in the future."""

    def __init__(self) -> None:
        self.port = free_port()
        self.down_until = 0.0
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0

        async def receive(request: Request) -> Response:
            body = await request.json()
            if time.monotonic() < self.down_until:
                self.refused += 1
                return JSONResponse({"error": "down"}, status_code=503)
            self.accepted.append(body)
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
async def alerting_api(
    temporal_client: Client, settings: Settings, receiver: WebhookReceiver
) -> AsyncIterator[httpx.AsyncClient]:
    alerting = settings.model_copy(
        update={
            "pause_categories": [],  # fail on the 401 at once
            "alert_rules": [
                AlertRule(name="critical-error", kind="severity", min_severity="critical", cooldown_s=600)
            ],
            "alert_webhook_url": receiver.url,
            "alert_delivery_max_interval_s": 2.0,
        }
    )
    app = create_app(alerting, temporal_client=temporal_client, reconcile=False)
    worker = build_worker(temporal_client, alerting)
    async with (
        app.router.lifespan_context(app),
        worker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


async def test_critical_failure_repeated_20_times_is_one_alert_delivered_after_a_30s_outage(
    alerting_api: httpx.AsyncClient, sim: SimulatorServer, receiver: WebhookReceiver
) -> None:
    api = alerting_api
    receiver.down_until = time.monotonic() + OUTAGE_S
    sim.script.add_rules([FaultRule(kind="auth", agent="researcher", count=None)])
    started = [
        (
            await api.post(
                "/api/v1/executions",
                json={"crew": research_spec(sim.base_url, name=f"alert-{i}"), "inputs": {"topic": "x"}},
            )
        ).json()["id"]
        for i in range(20)
    ]
    for execution_id in started:
        assert (await wait_terminal(api, execution_id, timeout_s=60))["status"] == "failed"
    errors = (await api.get("/api/v1/errors", params={"code": "LLM_AUTH_FAILED", "limit": 100})).json()[
        "items"
    ]
    assert len(errors) == 20 and {e["severity"] for e in errors} == {"critical"}

    alerts = (await api.get("/api/v1/alerts")).json()["items"]
    assert len(alerts) == 1 and alerts[0]["rule"] == "critical-error"
    assert alerts[0]["delivered"] is False  # the receiver is still down

    deadline = time.monotonic() + OUTAGE_S + 30
    while not receiver.accepted and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # time for a duplicate to show up, if one were coming

    assert len(receiver.accepted) == 1
    assert receiver.accepted[0]["id"] == alerts[0]["id"]
    assert receiver.accepted[0]["severity"] == "critical"
    assert receiver.refused >= 2  # retried through the outage
    (alert,) = (await api.get("/api/v1/alerts")).json()["items"]
    assert alert["delivered"] is True and alert["delivery_attempts"] >= 2 and alert["last_error"] is None


def _error(
    code: str = "NETWORK_CONNECT_FAILED", category: str = "network", severity: str = "medium"
) -> dict[str, Any]:
    return {
        "code": code,
        "category": category,
        "severity": severity,
        "service": "openai",
        "task": "t",
        "agent": "a",
        "message": "boom",
    }


def test_rate_rule_fires_once_when_the_window_fills(store: Any) -> None:
    from backend.alerts import Alerter, AlertEvent, LogSink
    from tests.error_burst import burst

    alerter = Alerter(
        store.db,
        [AlertRule(name="limits", kind="rate", category="rate_limit", count=6, window_s=10**9)],
        [LogSink()],
    )
    event = AlertEvent("error", "rate limited", error=_error("LLM_RATE_LIMITED", "rate_limit", "low"))
    burst(store, executions=1, per_execution=5)
    assert alerter.raise_for(event) == []  # 5 < 6
    burst(store, executions=1, per_execution=1)
    assert len(alerter.raise_for(event)) == 1  # the 6th in the window
    assert alerter.raise_for(event) == []  # same incident, within the cooldown
    assert alerter.raise_for(AlertEvent("error", "net", error=_error())) == []  # other category


def test_slack_and_webhook_sinks_each_get_the_alert_once(store: Any, receiver: WebhookReceiver) -> None:
    from backend.alerts import Alerter, AlertEvent, LogSink, SinkUnavailable, SlackSink, WebhookSink

    alerter = Alerter(
        store.db,
        [AlertRule(name="paused", kind="paused", cooldown_s=0)],
        [LogSink(), WebhookSink(receiver.url), SlackSink(receiver.url)],
    )
    (alert_id,) = alerter.raise_for(
        AlertEvent(
            "paused",
            "execution e1 paused: LLM_AUTH_FAILED",
            execution_id="e1",
            error=_error("LLM_AUTH_FAILED", "authentication", "critical"),
        )
    )
    receiver.down_until = time.monotonic() + 60
    with httpx.Client(timeout=5) as client, pytest.raises(SinkUnavailable):
        alerter.deliver(alert_id, client)
    receiver.down_until = 0
    with httpx.Client(timeout=5) as client:
        assert alerter.deliver(alert_id, client) == ["webhook", "slack"]  # log accepted the first time
        assert alerter.deliver(alert_id, client) == []  # delivered: nothing is sent twice
    webhook, slack = receiver.accepted
    assert webhook["id"] == alert_id and webhook["rule"] == "paused" and webhook["severity"] == "critical"
    assert slack == {"text": "[CRITICAL] execution e1 paused: LLM_AUTH_FAILED\nboom"}
    alert = alerter.get(alert_id)
    assert alert is not None and alert.delivered and alert.delivery_attempts == 2


def test_a_fourth_kind_of_sink_plugs_in_without_changing_the_alerter(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import dataclass

    from backend import alerts
    from backend.alerts import Alerter, AlertEvent, register_sink, sinks_from
    from backend.settings import Settings

    @dataclass
    class PagerSink:  # a team's own sink: anything with a name and send()
        name: str = "pager"
        sent: list[dict[str, Any]] | None = None

        def send(self, payload: dict[str, Any], client: httpx.Client) -> None:
            assert self.sent is not None
            self.sent.append(payload)

    pager = PagerSink(sent=[])
    monkeypatch.setattr(
        alerts, "SINK_FACTORIES", dict(alerts.SINK_FACTORIES)
    )  # registered for this test only
    register_sink("pager", lambda settings: pager)
    sinks = sinks_from(Settings())
    assert [s.name for s in sinks] == ["log", "pager"]  # webhook and slack are not configured here

    alerter = Alerter(store.db, [AlertRule(name="dl", kind="dead_letter", cooldown_s=0)], sinks)
    (alert_id,) = alerter.raise_for(AlertEvent("dead_letter", "execution e2 failed", execution_id="e2"))
    with httpx.Client(timeout=5) as client:
        assert alerter.deliver(alert_id, client) == ["log", "pager"]
    assert [p["id"] for p in pager.sent] == [alert_id]
