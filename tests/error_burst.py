"""A burst of classified rate-limit failures written as error events: the data of the error
analytics and alert tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import httpx
import openai

from activities.boundary import AttemptContext, AttemptState, ErrorBoundary
from backend.db.store import Store
from backend.exceptions.retry_policy import resolve

T0 = datetime(2026, 11, 29, 4, 20, tzinfo=UTC)
SPEC = {"name": "c", "tasks": [{"name": "research", "agent": "researcher"}]}


def rate_limit(request_id: str) -> openai.RateLimitError:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    body = {
        "error": {
            "message": f"Rate limit reached for gpt-4o (request {request_id}). Try again in 20s.",
            "code": "rate_limit_exceeded",
        }
    }
    response = httpx.Response(429, json=body, headers={"retry-after": "20"}, request=request)
    return openai.RateLimitError(body["error"]["message"], response=response, body=body["error"])


def burst(store: Store, executions: int = 10, per_execution: int = 5) -> list[str]:
    """50 rate-limit failures, whose messages differ only in request ids, across 10 executions."""
    boundary = ErrorBoundary(rng=random.Random(0))
    ids = []
    for e in range(executions):
        execution, _ = store.create_execution(
            crew_id=None, crew_name="c", spec=SPEC, inputs={}, idempotency_key=None, request_hash=None
        )
        ids.append(execution.id)
        state = AttemptState()
        for attempt in range(1, per_execution + 1):
            failure = boundary.failure(
                rate_limit(f"req_{e:02d}{attempt:02d}abcdef"),
                state=state,
                table=resolve(),
                context=AttemptContext("research", "researcher", "openai", attempt),
            )
            # Spread over 50 minutes from T0: all inside the 04:00 and 05:00 hour buckets.
            failure.record.occurred_at = (T0 + timedelta(minutes=e * 5 + attempt)).isoformat()
            assert store.record_attempt_failure(execution.id, "research", record=failure.record, final=False)
    return ids
