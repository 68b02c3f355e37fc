"""Alerts: rules over crewrun's events, one alert per incident, delivered durably.

Events (a failed attempt, a circuit that opened, a dead letter, a paused execution) are offered to
:meth:`Alerter.raise_for` where they happen, in activities. A rule that matches yields a dedup key;
an atomic UPDATE on ``alert_dedup`` lets exactly one caller per key and cooldown create the alert
(so 20 identical failures are one alert, and an activity retry is a no-op). Delivery is a Temporal
workflow per alert (``AlertDelivery``) whose activity retries until every sink accepted it, so a
sink outage delays an alert but never loses it; each sink gets it once.

Sinks (the :class:`Sink` protocol): ``log`` (always), a generic JSON ``webhook``, a Slack-compatible
``slack`` incoming webhook; :func:`register_sink` adds a kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from backend.db import alerts
from backend.db.database import Database
from backend.db.models import Alert, utcnow
from backend.db.paging import Page
from backend.exceptions.redaction import redact_data

log = structlog.get_logger("crewrun.alerts")
# Namespace of alert ids derived from an incident name (uuid5): the same incident, the same id.
INCIDENTS = uuid.UUID("6f1c1f3e-8a51-4d1e-9b7c-2f0a5c3e9d41")
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,100}$")
    kind: Literal["severity", "rate", "circuit_opened", "dead_letter", "paused", "spend", "waste"]
    min_severity: Literal["low", "medium", "high", "critical"] = "critical"  # kind=severity
    category: str | None = None  # kind=rate: count errors of this category ...
    code: str | None = None  # ... or of this code
    count: int = Field(default=10, ge=1)  # kind=rate: this many ...
    window_s: float = Field(default=300, gt=0)  # ... within this window
    cooldown_s: float = Field(default=900, ge=0)  # one alert per dedup key per cooldown
    # kind=spend: an execution whose calls cost more than this (USD); kind=waste: calls of failed
    # attempts, not reused, costing more than this within window_s.
    max_usd: float = Field(default=1.0, ge=0)
    sinks: list[str] | None = None  # None: every configured sink


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(name="critical-error", kind="severity", min_severity="critical"),
    AlertRule(name="circuit-opened", kind="circuit_opened"),
    AlertRule(name="dead-letter", kind="dead_letter", cooldown_s=0),
    AlertRule(name="execution-paused", kind="paused", cooldown_s=0),
)


@dataclass(frozen=True)
class AlertEvent:
    kind: Literal["error", "circuit_opened", "dead_letter", "paused", "spend"]
    title: str
    severity: str = "high"
    execution_id: str | None = None
    error: dict[str, Any] | None = None  # the error record, for error events
    service: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # Names the incident when the caller may offer it again (an activity retried after an
    # ambiguous commit): each rule then raises at most one alert for it, ever.
    incident: str | None = None


class Sink(Protocol):
    """Somewhere an alert goes. ``send`` raises httpx.HTTPError when the sink refused it (the
    delivery workflow tries again later); it may be called again for an alert it took before
    (after a crash), so it should de-duplicate by the payload's ``id``."""

    @property
    def name(self) -> str: ...

    def send(self, payload: dict[str, Any], client: httpx.Client) -> None: ...


@dataclass(frozen=True)
class LogSink:
    name: str = "log"

    def send(self, payload: dict[str, Any], client: httpx.Client) -> None:
        log.error("alert", **{k: v for k, v in payload.items() if k != "data"})


@dataclass(frozen=True)
class WebhookSink:
    """The alert as JSON, with the alert id as ``Idempotency-Key``."""

    url: str
    name: str = "webhook"

    def send(self, payload: dict[str, Any], client: httpx.Client) -> None:
        client.post(self.url, json=payload, headers={"Idempotency-Key": payload["id"]}).raise_for_status()


@dataclass(frozen=True)
class SlackSink:
    """A Slack-compatible incoming webhook: one line of text."""

    url: str
    name: str = "slack"

    def send(self, payload: dict[str, Any], client: httpx.Client) -> None:
        text = f"[{payload['severity'].upper()}] {payload['title']}\n{payload['detail'][:500]}"
        client.post(
            self.url, json={"text": text}, headers={"Idempotency-Key": payload["id"]}
        ).raise_for_status()


# How each kind of sink is made from the settings (None: not configured). A deployment adds one
# with register_sink, without touching this module's code.
SinkFactory = Callable[[Any], Sink | None]


def _log(settings: Any) -> Sink | None:
    return LogSink()


def _webhook(settings: Any) -> Sink | None:
    return WebhookSink(settings.alert_webhook_url) if settings.alert_webhook_url else None


def _slack(settings: Any) -> Sink | None:
    return SlackSink(settings.alert_slack_webhook_url) if settings.alert_slack_webhook_url else None


SINK_FACTORIES: dict[str, SinkFactory] = {"log": _log, "webhook": _webhook, "slack": _slack}


def register_sink(kind: str, factory: SinkFactory) -> None:
    SINK_FACTORIES[kind] = factory


def sinks_from(settings: Any) -> list[Sink]:
    return [sink for factory in SINK_FACTORIES.values() if (sink := factory(settings)) is not None]


class Alerter:
    def __init__(self, db: Database, rules: list[AlertRule], sinks: list[Sink]) -> None:
        self._db = db
        self.rules = rules
        self.sinks = {s.name: s for s in sinks}

    # ----- raising -----

    def raise_for(self, event: AlertEvent) -> list[str]:
        """Create the alerts this event deserves (after dedup); returns their ids."""
        created = []
        for rule in self.rules:
            key = self._matches(rule, event)
            if key is None:
                continue
            alert_id = str(uuid.uuid5(INCIDENTS, f"{rule.name}:{event.incident}")) if event.incident else None
            if alert_id is not None and self.get(alert_id) is not None:
                created.append(alert_id)  # raised before: the caller makes sure it is delivered
            elif self._first_in_cooldown(key, rule.cooldown_s):
                created.append(self._create(rule, key, event, alert_id))
        return created

    def _matches(self, rule: AlertRule, event: AlertEvent) -> str | None:
        error = event.error or {}
        if rule.kind == "severity" and event.kind == "error":
            if SEVERITY_RANK.get(error.get("severity", "low"), 0) >= SEVERITY_RANK[rule.min_severity]:
                return f"{rule.name}:{error.get('code')}:{error.get('service')}"
        elif rule.kind == "rate" and event.kind == "error":
            if (rule.category and error.get("category") != rule.category) or (
                rule.code and error.get("code") != rule.code
            ):
                return None
            if self._recent_errors(rule) >= rule.count:
                return f"{rule.name}:{rule.category or ''}:{rule.code or ''}"
        elif rule.kind == "circuit_opened" and event.kind == "circuit_opened":
            return f"{rule.name}:{event.service}"
        elif rule.kind == "spend" and event.kind == "spend":
            if float(event.data.get("execution_cost_usd") or 0.0) > rule.max_usd:
                return f"{rule.name}:{event.execution_id}"
        elif rule.kind == "waste" and event.kind == "spend":
            if self._recent_waste(rule) > rule.max_usd:
                return f"{rule.name}"
        elif (
            rule.kind == "dead_letter"
            and event.kind == "dead_letter"
            or rule.kind == "paused"
            and event.kind == "paused"
        ):
            return f"{rule.name}:{event.execution_id}"
        return None

    def wants(self, kind: str) -> bool:
        """Whether an event of this kind can raise anything (spend events cost a read)."""
        kinds = {"spend": ("spend", "waste")}.get(kind, (kind,))
        return any(rule.kind in kinds for rule in self.rules)

    def _recent_waste(self, rule: AlertRule) -> float:
        since = utcnow() - timedelta(seconds=rule.window_s)
        with self._db.read() as s:
            return alerts.recent_waste(s, since=since)

    def _recent_errors(self, rule: AlertRule) -> int:
        since = utcnow() - timedelta(seconds=rule.window_s)
        with self._db.read() as s:
            return alerts.recent_errors(s, since=since, category=rule.category, code=rule.code)

    def _first_in_cooldown(self, key: str, cooldown_s: float) -> bool:
        return alerts.first_in_cooldown(self._db, key, cooldown_s)

    def _create(self, rule: AlertRule, key: str, event: AlertEvent, alert_id: str | None) -> str:
        alert_id = alert_id or str(uuid.uuid4())
        error = event.error or {}
        detail = error.get("message") or event.data.get("detail") or ""
        try:
            self._insert(alert_id, rule, key, event, error, detail)
        except IntegrityError:
            if self.get(alert_id) is None:
                raise
            return alert_id  # a concurrent offer of the same incident created it
        log.warning("alert.raised", alert_id=alert_id, rule=rule.name, dedup_key=key, title=event.title)
        return alert_id

    def _insert(
        self, alert_id: str, rule: AlertRule, key: str, event: AlertEvent, error: dict[str, Any], detail: str
    ) -> None:
        with self._db.transaction("alert.insert") as s:
            alerts.insert(
                s,
                Alert(
                    id=alert_id,
                    rule=rule.name,
                    severity=error.get("severity", event.severity),
                    title=event.title[:300],
                    detail=str(detail)[:2000],
                    dedup_key=key[:300],
                    execution_id=event.execution_id,
                    data=redact_data(
                        {
                            "error": {
                                k: error.get(k) for k in ("code", "category", "task", "agent", "service")
                            }
                            if error
                            else None,
                            **event.data,
                        }
                    ),
                    sinks=rule.sinks or list(self.sinks),
                    delivered_sinks=[],
                    delivered=False,
                    delivery_attempts=0,
                    created_at=utcnow(),
                ),
            )

    # ----- delivering (called by the delivery activity, retried by Temporal) -----

    def deliver(self, alert_id: str, client: httpx.Client) -> list[str]:
        """Send to every sink that has not accepted it yet; raises if one still refuses.
        Returns the sinks that accepted it in this call."""
        with self._db.read() as s:
            alert = alerts.get(s, alert_id)
            if alert is None or alert.delivered:
                return []
            pending = [n for n in alert.sinks if n not in alert.delivered_sinks and n in self.sinks]
            payload = self.payload(alert)
        accepted, failures = [], []
        for name in pending:
            try:
                self.sinks[name].send(payload, client)
                accepted.append(name)
            except httpx.HTTPError as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        with self._db.transaction("alert.delivery") as s:
            alerts.record_delivery(s, alert_id, accepted, failures)
        if failures:
            raise SinkUnavailable("; ".join(failures))
        return accepted

    @staticmethod
    def payload(alert: Alert) -> dict[str, Any]:
        return {
            "id": alert.id,
            "rule": alert.rule,
            "severity": alert.severity,
            "title": alert.title,
            "detail": alert.detail,
            "execution_id": alert.execution_id,
            "data": alert.data,
            "created_at": alert.created_at.isoformat(),
        }

    # ----- reading -----

    def page(self, *, since: Any, limit: int, cursor: str | None) -> Page[Alert]:
        with self._db.read() as s:
            return alerts.page(s, since=since, limit=limit, cursor=cursor)

    def get(self, alert_id: str) -> Alert | None:
        with self._db.read() as s:
            return alerts.get(s, alert_id)

    def undelivered(self, *, before: datetime, limit: int) -> list[str]:
        with self._db.read() as s:
            return alerts.undelivered(s, before=before, limit=limit)


class SinkUnavailable(Exception):
    pass
