"""Fingerprints group errors that are "the same problem": same code, same exception type, same
message once volatile parts (ids, numbers, timestamps, URL query strings, quoted values) are gone."""

from __future__ import annotations

import hashlib
import re

_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"), "<ts>"),
    (re.compile(r"(https?://[^\s?#'\"]+)\?[^\s#'\"]*"), r"\1?<query>"),
    (re.compile(r"\b(req|chatcmpl|run|msg|call)[-_][A-Za-z0-9]{6,}\b"), r"\1-<id>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<addr>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalize(message: str) -> str:
    for pattern, replacement in _VOLATILE:
        message = pattern.sub(replacement, message)
    return message.strip()[:500]


def fingerprint(code: str, exception_type: str, message: str) -> str:
    key = f"{code}|{exception_type}|{normalize(message)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]
