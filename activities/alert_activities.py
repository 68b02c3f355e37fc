"""Raising and delivering alerts from activities."""

from __future__ import annotations

import asyncio

import httpx
import structlog
from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy

from backend.alerts import Alerter, AlertEvent
from backend.metrics import Metrics
from workflows.contracts import ALERT_WORKFLOW_NAME, DELIVER_ALERT_ACTIVITY

log = structlog.get_logger(__name__)


class AlertActivities:
    def __init__(self, alerter: Alerter, metrics: Metrics) -> None:
        self._alerter = alerter
        self._metrics = metrics

    @activity.defn(name=DELIVER_ALERT_ACTIVITY)
    async def deliver_alert(self, alert_id: str) -> list[str]:
        def send() -> list[str]:
            with httpx.Client(timeout=10) as client:
                return self._alerter.deliver(alert_id, client)

        accepted = await asyncio.to_thread(send)
        alert = await asyncio.to_thread(self._alerter.get, alert_id)
        for sink in accepted:
            self._metrics.alerts_sent.labels(alert.rule if alert else "unknown", sink).inc()
        log.info("alert.delivered", alert_id=alert_id, sinks=accepted)
        return accepted


async def raise_alert(alerter: Alerter | None, event: AlertEvent, max_interval_s: float = 30.0) -> list[str]:
    """From inside an activity: create the alerts the event deserves and start their delivery.
    Never fails the caller: an alert that could not be handed to Temporal here is started by the
    API's reconciler (it looks for undelivered alerts)."""
    if alerter is None:
        return []
    try:
        ids = await asyncio.to_thread(alerter.raise_for, event)
        client = activity.client()
        for alert_id in ids:
            await client.start_workflow(
                ALERT_WORKFLOW_NAME,
                args=[alert_id, max_interval_s],
                id=f"alert-{alert_id}",
                task_queue=activity.info().task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        return ids
    except Exception as exc:  # alerting must not turn a task failure into a different one
        log.error("alert.raise_failed", error=f"{type(exc).__name__}: {exc}"[:300], kind=event.kind)
        return []
