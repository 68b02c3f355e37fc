"""The one boundary where exceptions from CrewAI, provider SDKs and the OS become Temporal errors.

Every failure leaves an activity as ``ApplicationError(type=<category>, details=[record])``: the
category decides retryability (non-retryable categories are declared on the RetryPolicy), the record
is what the API, the DB and the Web UI show. The mapping here is the foundation's; the
classification work refines it into the full taxonomy.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

from temporalio.exceptions import ApplicationError

from backend.exceptions.codes import lookup
from backend.exceptions.redaction import redact

MAX_MESSAGE_CHARS = 500


class ConfigurationError(Exception):
    """The worker lacks something the spec needs (an env var, a model)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify(exc: BaseException) -> str:
    """The registry code for an exception, walking its cause chain, most specific first."""
    import httpx
    import openai

    for err in _chain(exc):
        if isinstance(err, ConfigurationError):
            return "CONFIG_SECRET_MISSING"
        if isinstance(err, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
            return "LLM_TIMEOUT"
        if isinstance(err, openai.APIConnectionError | httpx.TransportError | ConnectionError):
            return "NETWORK_CONNECT_FAILED"
        if isinstance(err, openai.APIStatusError):
            body = err.body if isinstance(err.body, dict) else {}
            code = str(body.get("code") or getattr(err, "code", "") or "")
            status = err.status_code
            if code == "insufficient_quota":
                return "LLM_QUOTA_EXHAUSTED"
            if code == "context_length_exceeded":
                return "LLM_CONTEXT_TOO_LONG"
            if code in ("content_policy_violation", "content_filter"):
                return "LLM_CONTENT_REFUSED"
            if status in (401, 403):
                return "LLM_AUTH_FAILED"
            if status == 429:
                return "LLM_RATE_LIMITED"
            if status >= 500:
                return "LLM_PROVIDER_ERROR"
            return "LLM_BAD_REQUEST"
        if type(err).__name__ == "LLMContextLengthExceededError":
            return "LLM_CONTEXT_TOO_LONG"
        if isinstance(err, ValueError) and "json" in type(err).__name__.lower():
            return "LLM_OUTPUT_INVALID"
    return "TASK_FAILED"


def to_application_error(
    exc: BaseException, *, task: str, agent: str, attempt: int, max_attempts: int
) -> ApplicationError:
    entry = lookup(classify(exc))
    message = redact(f"{type(exc).__name__}: {exc}")[:MAX_MESSAGE_CHARS]
    record: dict[str, Any] = {
        "code": entry.code,
        "category": entry.category.value,
        "severity": entry.severity.value,
        "retryable": entry.retryable,
        "message": message,
        "task": task,
        "agent": agent,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "stack": redact("".join(traceback.format_exception(exc))[-4000:]),
    }
    return ApplicationError(
        f"[{entry.code}] {message[:200]} — task {task}, agent {agent}, attempt {attempt}/{max_attempts}",
        record,
        type=entry.category.value,
        non_retryable=not entry.retryable,
    )
