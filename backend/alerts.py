"""Alerts: rules over crewrun's events, one alert per incident, delivered durably.

Events (a failed attempt, a circuit that opened, a dead letter, a paused execution) are offered to
:meth:`Alerter.raise_for` where they happen, in activities. A rule that matches yields a dedup key;
an atomic UPDATE on ``alert_dedup`` lets exactly one caller per key and cooldown create the alert
(so 20 identical failures are one alert, and an activity retry is a no-op). Delivery is a Temporal
workflow per alert (``AlertDelivery``) whose activity retries until every sink accepted it, so a
sink outage delays an alert but never loses it; each sink gets it once.

Sinks: ``log`` (always), a generic JSON ``webhook``, a Slack-compatible ``slack`` incoming webhook.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from backend.db.models import Alert, AlertDedup, ErrorEvent, utcnow
from backend.db.store import Page, Store
from backend.exceptions.redaction import redact_data

log = structlog.get_logger("crewrun.alerts")
# Namespace of alert ids derived from an incident name (uuid5): the same incident, the same id.
INCIDENTS = uuid.UUID("6f1c1f3e-8a51-4d1e-9b7c-2f0a5c3e9d41")
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,100}$")
    kind: Literal["severity", "rate", "circuit_opened", "dead_letter", "paused"]
    min_severity: Literal["low", "medium", "high", "critical"] = "critical"  # kind=severity
    category: str | None = None  # kind=rate: count errors of this category ...
    code: str | None = None  # ... or of this code
    count: int = Field(default=10, ge=1)  # kind=rate: this many ...
    window_s: float = Field(default=300, gt=0)  # ... within this window
    cooldown_s: float = Field(default=900, ge=0)  # one alert per dedup key per cooldown
    sinks: list[str] | None = None  # None: every configured sink


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(name="critical-error", kind="severity", min_severity="critical"),
    AlertRule(name="circuit-opened", kind="circuit_opened"),
    AlertRule(name="dead-letter", kind="dead_letter", cooldown_s=0),
    AlertRule(name="execution-paused", kind="paused", cooldown_s=0),
)


@dataclass(frozen=True)
class AlertEvent:
    kind: Literal["error", "circuit_opened", "dead_letter", "paused"]
    title: str
    severity: str = "high"
    execution_id: str | None = None
    error: dict[str, Any] | None = None  # the error record, for error events
    service: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # Names the incident when the caller may offer it again (an activity retried after an
    # ambiguous commit): each rule then raises at most one alert for it, ever.
    incident: str | None = None


@dataclass(frozen=True)
class Sink:
    name: str
    kind: Literal["log", "webhook", "slack"]
    url: str | None = None


def sinks_from(settings: Any) -> list[Sink]:
    sinks = [Sink("log", "log")]
    if settings.alert_webhook_url:
        sinks.append(Sink("webhook", "webhook", settings.alert_webhook_url))
    if settings.alert_slack_webhook_url:
        sinks.append(Sink("slack", "slack", settings.alert_slack_webhook_url))
    return sinks


class Alerter:
    def __init__(self, store: Store, rules: list[AlertRule], sinks: list[Sink]) -> None:
        self._store = store
        self._sessions = store.sessions
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
        elif (
            rule.kind == "dead_letter"
            and event.kind == "dead_letter"
            or rule.kind == "paused"
            and event.kind == "paused"
        ):
            return f"{rule.name}:{event.execution_id}"
        return None

    def _recent_errors(self, rule: AlertRule) -> int:
        since = utcnow() - timedelta(seconds=rule.window_s)
        query = select(func.count()).select_from(ErrorEvent).where(ErrorEvent.occurred_at >= since)
        if rule.category:
            query = query.where(ErrorEvent.category == rule.category)
        if rule.code:
            query = query.where(ErrorEvent.code == rule.code)
        with self._sessions() as s:
            return int(s.scalar(query) or 0)

    def _first_in_cooldown(self, key: str, cooldown_s: float) -> bool:
        """True for exactly one caller per key and cooldown, across processes."""
        now = utcnow()
        with self._sessions() as s, s.begin():
            won = s.execute(
                update(AlertDedup)
                .where(AlertDedup.dedup_key == key, AlertDedup.last_at <= now - timedelta(seconds=cooldown_s))
                .values(last_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if won:
            return True
        try:
            with self._sessions() as s, s.begin():
                s.add(AlertDedup(dedup_key=key, last_at=now))
            return True
        except IntegrityError:
            return False  # the key fired within its cooldown (or a concurrent caller won)

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
        with self._sessions() as s, s.begin():
            s.add(
                Alert(
                    id=alert_id, rule=rule.name, severity=error.get("severity", event.severity),
                    title=event.title[:300], detail=str(detail)[:2000], dedup_key=key[:300],
                    execution_id=event.execution_id,
                    data=redact_data({"error": {k: error.get(k) for k in ("code", "category", "task", "agent", "service")}
                                      if error else None, **event.data}),
                    sinks=rule.sinks or list(self.sinks), delivered_sinks=[], delivered=False,
                    delivery_attempts=0, created_at=utcnow(),
                )
            )  # fmt: skip

    # ----- delivering (called by the delivery activity, retried by Temporal) -----

    def deliver(self, alert_id: str, client: httpx.Client) -> list[str]:
        """Send to every sink that has not accepted it yet; raises if one still refuses.
        Returns the sinks that accepted it in this call."""
        with self._sessions() as s:
            alert = s.get(Alert, alert_id)
            if alert is None or alert.delivered:
                return []
            pending = [n for n in alert.sinks if n not in alert.delivered_sinks and n in self.sinks]
            payload = self.payload(alert)
        accepted, failures = [], []
        for name in pending:
            try:
                self._send(self.sinks[name], payload, client)
                accepted.append(name)
            except httpx.HTTPError as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        with self._sessions() as s, s.begin():
            alert = s.get(Alert, alert_id)
            assert alert is not None
            alert.delivered_sinks = sorted({*alert.delivered_sinks, *accepted})
            alert.delivery_attempts += 1
            alert.last_error = "; ".join(failures) or None
            if not failures:
                alert.delivered, alert.delivered_at = True, utcnow()
        if failures:
            raise SinkUnavailable("; ".join(failures))
        return accepted

    @staticmethod
    def payload(alert: Alert) -> dict[str, Any]:
        return {
            "id": alert.id, "rule": alert.rule, "severity": alert.severity, "title": alert.title,
            "detail": alert.detail, "execution_id": alert.execution_id, "data": alert.data,
            "created_at": alert.created_at.isoformat(),
        }  # fmt: skip

    @staticmethod
    def _send(sink: Sink, payload: dict[str, Any], client: httpx.Client) -> None:
        if sink.kind == "log":
            log.error("alert", **{k: v for k, v in payload.items() if k != "data"})
            return
        assert sink.url is not None
        body = payload if sink.kind == "webhook" else {
            "text": f"[{payload['severity'].upper()}] {payload['title']}\n{payload['detail'][:500]}"
        }  # fmt: skip
        response = client.post(sink.url, json=body, headers={"Idempotency-Key": payload["id"]})
        response.raise_for_status()

    # ----- reading -----

    def list(self, *, since: Any, limit: int, cursor: str | None) -> Page[Alert]:
        query = select(Alert)
        if since is not None:
            query = query.where(Alert.created_at >= since)
        return self._store.page(query, Alert.created_at, Alert.id, limit, cursor)

    def get(self, alert_id: str) -> Alert | None:
        with self._sessions() as s:
            return s.get(Alert, alert_id)


class SinkUnavailable(Exception):
    pass
