"""The activity error boundary: every exception leaves a crew task here, classified, redacted,
bounded, with its category's own retry decision.

Temporal retries an activity with one RetryPolicy; crewrun needs one per error category. So the
boundary counts failures per category (the counts ride in heartbeat details into the next
attempt), and raises ``ApplicationError(type=<category>)`` with

- ``next_retry_delay`` = the category's jittered backoff, never earlier than the provider's
  Retry-After, while the category has budget left;
- ``non_retryable=True`` once the category's budget is spent (or the category never retries);
- ``type=<category>.fallback`` when the failure moves the task to the agent's next LLM: a type
  Temporal retries even when the category's own type is declared non-retryable (quota).

The message reads well in the Web UI (``[LLM_RATE_LIMITED] openai 429 — task research, agent
researcher, attempt 3/12``); the details carry the structured, redacted error record.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.attempt_calls import CallFailed
from backend.exceptions.categories import FALLS_BACK, CategoryPolicy
from backend.exceptions.classifier import Classification, chain, classify, qualified_name, rules
from backend.exceptions.fingerprint import fingerprint
from backend.exceptions.records import ErrorRecord
from backend.exceptions.redaction import bound, redact, redact_message, redact_stack
from backend.exceptions.retry_policy import next_delay

HISTORY_LIMIT = 20  # errors kept in heartbeat details: enough context, bounded history size
UNRECORDED_LIMIT = 5  # whole error records waiting for the database: a few KB each
FALLBACK_DELAY_S = 0.1  # the next LLM of the chain starts at once
FALLBACK_TYPE_SUFFIX = ".fallback"  # never among the RetryPolicy's non-retryable error types
UI_MESSAGE_CHARS = 160


@dataclass
class AttemptState:
    """What one attempt of a task hands to the next, through heartbeat details."""

    failures: dict[str, int] = field(default_factory=dict)  # per category, for the current LLM
    history: list[dict[str, Any]] = field(default_factory=list)
    llm_index: int = 0  # 0: the agent's LLM; n: its n-th fallback
    # Error events no attempt could write yet (the database was failing); the next one does.
    unrecorded: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> AttemptState:
        for item in reversed(list(details)):
            if isinstance(item, dict) and "failures" in item:
                failures = {str(k): int(v) for k, v in dict(item.get("failures") or {}).items()}
                history = list(item.get("history") or [])[-HISTORY_LIMIT:]
                unrecorded = list(item.get("unrecorded") or [])[-UNRECORDED_LIMIT:]
                return cls(failures, history, int(item.get("llm_index") or 0), unrecorded)
        return cls()

    def to_details(self) -> dict[str, Any]:
        return {
            "failures": dict(self.failures),
            "history": self.history[-HISTORY_LIMIT:],
            "llm_index": self.llm_index,
            "unrecorded": self.unrecorded[-UNRECORDED_LIMIT:],
        }

    def keep_unrecorded(self, record: ErrorRecord) -> None:
        self.unrecorded.append(record.to_dict())
        del self.unrecorded[:-UNRECORDED_LIMIT]


@dataclass(frozen=True)
class AttemptContext:
    task: str
    agent: str
    service: str
    attempt: int  # Temporal's attempt number of this activity
    started_at: datetime | None = None


@dataclass(frozen=True)
class Failure:
    error: ApplicationError
    record: ErrorRecord
    final: bool  # no further attempt will follow


class ErrorBoundary:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        # Build the rule table now: it imports the provider SDKs (seconds), and doing that inside
        # the first failing activity would block the event loop past a short heartbeat timeout.
        rules()

    def failure(
        self,
        exc: BaseException,
        *,
        state: AttemptState,
        table: Mapping[str, CategoryPolicy],
        context: AttemptContext,
        fallback: str | None = None,
    ) -> Failure:
        """``fallback`` names the next LLM of the agent, if it has one left: when this LLM's
        budget for a provider-side category is spent, the task moves on to it instead of failing.
        A failed call (``CallFailed``) names its service, and the tool it was; a tool's policy may
        end the task at once (``action``)."""
        call = exc.call if isinstance(exc, CallFailed) else None
        if isinstance(exc, CallFailed) and exc.__cause__ is not None:
            exc = exc.__cause__  # what the call raised is the failure
        tool_call = call is not None and call.kind == "tool"
        found = classify(exc, tool=tool_call)
        category = found.category
        policy = table.get(category) or CategoryPolicy(maximum_attempts=1)
        count = state.failures.get(category, 0) + 1
        state.failures[category] = count
        forced = call.action if call is not None else None
        retry = found.entry.retryable and policy.retryable and count < policy.maximum_attempts and not forced
        delay = next_delay(policy, count, self._rng, found.retry_after_s) if retry else None
        # Provider-side trouble another LLM may not have (the category's ``falls_back`` trait):
        # once its budget is spent (at once, for quota), the agent's next LLM takes over. Only
        # the agent's own LLM falls back: a tool's trouble is the tool's.
        switch = (
            not retry and fallback is not None and category in FALLS_BACK and not tool_call and not forced
        )
        if call is not None:
            context = replace(context, service=call.service)
        if switch:
            state.llm_index += 1
            state.failures.clear()  # the fallback starts with fresh budgets
            retry, delay = True, FALLBACK_DELAY_S
        record = self._record(exc, found, context, count, policy.maximum_attempts, retry, delay)
        record.fallback_to = fallback if switch else None
        record.tool = call.name if tool_call and call is not None else None
        record.action = forced
        state.history.append(
            {
                "attempt": record.attempt,
                "code": record.code,
                "category": record.category,
                "occurred_at": record.occurred_at,
                "next_retry_delay_s": record.next_retry_delay_s,
            }
        )
        del state.history[:-HISTORY_LIMIT]
        error = ApplicationError(
            _ui_message(record),
            record.to_dict(),
            type=category + FALLBACK_TYPE_SUFFIX if switch else category,
            non_retryable=not retry,
            next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
        )
        return Failure(error, record, final=not retry)

    @staticmethod
    def _record(
        exc: BaseException,
        found: Classification,
        context: AttemptContext,
        category_attempt: int,
        category_budget: int,
        retry: bool,
        delay: float | None,
    ) -> ErrorRecord:
        entry = found.entry
        exception_type = qualified_name(found.matched)
        message = redact_message(f"{type(found.matched).__name__}: {found.matched}")
        return ErrorRecord(
            code=entry.code,
            category=entry.category.value,
            severity=entry.severity.value,
            retryable=retry,
            message=message,
            service=context.service,
            task=context.task,
            agent=context.agent,
            attempt=context.attempt,
            category_attempt=category_attempt,
            max_attempts=category_budget,
            status_code=found.status_code,
            provider_code=found.provider_code,
            retry_after_s=found.retry_after_s,
            next_retry_delay_s=round(delay, 3) if delay is not None else None,
            fingerprint=fingerprint(entry.code, exception_type, message),
            exception_type=exception_type,
            stack=redact_stack("".join(traceback.format_exception(exc))),
            cause_chain=[
                {"type": qualified_name(err), "message": bound(redact(str(err)), 500)} for err in chain(exc)
            ],
            occurred_at=datetime.now(UTC).isoformat(),
            attempt_started_at=context.started_at.isoformat() if context.started_at else None,
        )


def _ui_message(record: ErrorRecord) -> str:
    what = f"{record.service} {record.status_code or record.exception_type.rsplit('.', 1)[-1]}"
    tool = f", tool {record.tool}" if record.tool else ""
    where = (
        f"task {record.task}, agent {record.agent}{tool}, "
        f"attempt {record.category_attempt}/{record.max_attempts}"
    )
    detail = record.message.split(": ", 1)[-1][:UI_MESSAGE_CHARS]
    return f"[{record.code}] {what} — {where}: {detail}"
