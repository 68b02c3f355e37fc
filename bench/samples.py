"""Realistic exceptions and error records, shared by the analytics and micro benchmarks: the kinds
of failure a crew task meets (provider HTTP errors through the OpenAI SDK, transport errors, a
crewrun error, an unknown bug), and error records made from them by crewrun's real boundary."""

from __future__ import annotations

import random
from typing import Any

import httpx
import openai

from activities.boundary import AttemptContext, AttemptState, ErrorBoundary
from backend.exceptions.retry_policy import DEFAULT_POLICIES

URL = "https://api.openai.com/v1/chat/completions"


def _http(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers or {}, request=httpx.Request("POST", URL))


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    """Raised and caught, so it has a traceback and a cause like a real failure."""
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException as inner:
            raise exc from inner
        raise exc
    except BaseException as caught:
        return caught


def exceptions() -> dict[str, BaseException]:
    rate = {
        "error": {
            "message": "Rate limit reached for gpt-4o-mini",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    auth = {
        "error": {
            "message": "Incorrect API key provided: sk-proj-abcdefgh12345678",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    overloaded = {"error": {"message": "The server is overloaded.", "type": "server_error", "code": None}}
    request = httpx.Request("POST", URL)
    return {
        "openai 429 + Retry-After": _raised(
            openai.RateLimitError(
                "Rate limit reached",
                response=_http(429, rate, {"retry-after-ms": "1500"}),
                body=rate["error"],
            )
        ),
        "openai 401": _raised(
            openai.AuthenticationError("Incorrect API key", response=_http(401, auth), body=auth["error"])
        ),
        "openai 503": _raised(
            openai.InternalServerError(
                "overloaded", response=_http(503, overloaded), body=overloaded["error"]
            )
        ),
        "connect error (chained)": _raised(
            openai.APIConnectionError(request=request), httpx.ConnectError("[Errno 111] Connection refused")
        ),
        "read timeout": _raised(httpx.ReadTimeout("timed out", request=request)),
        "unknown bug": _raised(KeyError("agent")),
    }


def error_records(n_kinds: int | None = None) -> list[dict[str, Any]]:
    """One error record per exception kind, from the real boundary (classified, redacted, bounded,
    fingerprinted): what crewrun's activity hands to Store.record_attempt_failure."""
    boundary = ErrorBoundary(random.Random(0))
    records = []
    for name, exc in list(exceptions().items())[:n_kinds]:
        failure = boundary.failure(
            exc,
            state=AttemptState(),
            table=DEFAULT_POLICIES,
            context=AttemptContext("research", "researcher", f"svc-{len(name) % 3}", 1),
        )
        records.append(failure.record.to_dict())
    return records
