"""Webhooks as a request gives them, made subscriptions: the secret sealed before it is stored
(and added to the redaction set, so no log line shows it)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from backend.api.schemas import WebhookSpec
from backend.db.webhooks import Subscription
from backend.exceptions.redaction import add_secrets
from backend.secret_box import SecretBox
from backend.settings import Settings


@lru_cache(maxsize=8)
def _box(key: str, data_dir: Path) -> SecretBox:
    return SecretBox.for_deployment(key, data_dir)


def box_of(settings: Settings) -> SecretBox:
    return _box(settings.webhook_key, settings.data_dir)


def subscription(spec: WebhookSpec, box: SecretBox) -> Subscription:
    sealed = None
    if spec.secret:
        add_secrets([spec.secret])
        sealed = box.seal(spec.secret)
    return Subscription(url=spec.url, events=tuple(spec.events), secret_ciphertext=sealed)
