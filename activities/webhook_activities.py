"""Delivering an execution's webhook events: each subscription's events in order, signed when the
subscription has a secret, marked delivered once the receiver took them (2xx).

A receiver may get an event again (the worker died between its answer and the mark): every event
carries its ``id`` for de-duplication. One receiver refusing does not hold up another's events;
the activity fails (Temporal retries it with backoff, without limit) once the others are done.

Two formats: crewrun's (``{"id", "type", "execution_id", "sequence", "timestamp", "data"}``,
signed ``X-Crewrun-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``) and CrewAI's
hosted-API shapes for clients written against it (task, step and crew webhooks, with ``kickoff_id``
and ``meta``; signed ``X-CrewAI-Signature: sha256=<hex>`` with ``X-CrewAI-Timestamp``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from backend.db.models import WebhookEvent, WebhookSubscription
from backend.db.store import Store
from backend.db.webhooks import Pending
from backend.secret_box import SecretBox
from workflows.contracts import DELIVER_WEBHOOKS_ACTIVITY, WebhookProgress

log = structlog.get_logger(__name__)


class WebhookActivities:
    def __init__(self, store: Store, box: SecretBox, timeout_s: float = 10.0) -> None:
        self._store = store
        self._box = box
        self._timeout_s = timeout_s

    @activity.defn(name=DELIVER_WEBHOOKS_ACTIVITY)
    async def deliver_webhooks(self, execution_id: str) -> WebhookProgress:
        pending = await asyncio.to_thread(self._store.pending_webhooks, execution_id)
        delivered, refused = 0, {}
        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            for item in pending:
                sub = item.subscription
                if sub.id in refused:
                    continue  # its receiver refused an earlier event: keep the order, try later
                body, headers = render(item, self._box)
                try:
                    answer = await client.post(sub.url, content=body, headers=headers)
                    answer.raise_for_status()
                except httpx.HTTPError as exc:
                    refused[sub.id] = f"{type(exc).__name__}: {exc}"[:500]
                    await asyncio.to_thread(self._store.webhook_refused, item.event.id, refused[sub.id])
                    continue
                await asyncio.to_thread(self._store.webhook_delivered, item.event.id)
                delivered += 1
        if refused:
            log.warning(
                "webhook.refused", execution_id=execution_id, delivered=delivered, refused=len(refused)
            )
            raise ApplicationError(
                f"{len(refused)} webhook receiver(s) refused; delivered {delivered}", type="WEBHOOK_REFUSED"
            )
        done = await asyncio.to_thread(self._store.webhook_delivery_finished, execution_id)
        if delivered:
            log.info("webhook.delivered", execution_id=execution_id, delivered=delivered, done=done)
        return WebhookProgress(delivered, done)


def render(item: Pending, box: SecretBox) -> tuple[bytes, dict[str, str]]:
    """The request body and headers of one event for its subscription."""
    event, sub = item.event, item.subscription
    payload = crewai_payload(event, sub) if sub.format == "crewai" else crewrun_payload(event)
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    headers = {
        "content-type": "application/json",
        "x-crewrun-event-id": event.event_id,
        "x-crewrun-event": event.type,
    }
    if sub.secret_ciphertext:
        secret = box.open(sub.secret_ciphertext).encode()
        timestamp = str(int(time.time()))
        digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if sub.format == "crewai":
            headers |= {"x-crewai-signature": f"sha256={digest}", "x-crewai-timestamp": timestamp}
        else:
            headers["x-crewrun-signature"] = f"t={timestamp},v1={digest}"
    return body, headers


def crewrun_payload(event: WebhookEvent) -> dict[str, Any]:
    return {
        "id": event.event_id,
        "type": event.type,
        "execution_id": event.execution_id,
        "sequence": event.id,
        "timestamp": event.created_at.isoformat(),
        "data": event.payload,
    }


def crewai_payload(event: WebhookEvent, sub: WebhookSubscription) -> dict[str, Any]:
    """CrewAI's hosted-API webhook shapes (task, step, crew); see docs/api.md for what differs."""
    data = event.payload
    common = {"kickoff_id": event.execution_id, "meta": sub.meta or {}, "event_id": event.event_id}
    if event.type in ("task_completed", "task_failed", "awaiting_feedback"):
        status = {"awaiting_feedback": "pending_human_input", "task_failed": "failed"}.get(
            event.type, "completed"
        )
        return common | {
            "task_id": data.get("task"),
            "name": data.get("task"),
            "agent": data.get("agent"),
            "status": status,
            "output": data.get("output"),
            "output_json": data.get("json_dict"),
            "summary": (data.get("output") or "")[:200],
        }
    if event.type == "step":
        return common | {
            "task_id": data.get("task"),
            "step_type": "tool_call" if data.get("kind") == "tool" else "llm_call",
            "tool": data.get("name") if data.get("kind") == "tool" else None,
            "model": data.get("name") if data.get("kind") == "llm" else None,
            "replayed": data.get("replayed"),
        }
    result = data.get("result") or {}
    return common | {
        "status": data.get("status"),
        "result": result.get("raw"),
        "result_json": result.get("json_dict"),
        "token_usage": data.get("token_usage"),
        "error": (data.get("error") or {}).get("message"),
    }
