"""The activity error boundary: classification, per-category budgets, Temporal's ApplicationError,
heartbeat-carried attempt state and the redacted error record."""

from __future__ import annotations

import json
import random
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy.exc as sa
from temporalio.exceptions import ApplicationError

from activities.attempt_calls import AttemptAborted, CallFailed, CallInfo
from activities.boundary import (
    HISTORY_LIMIT,
    UI_MESSAGE_CHARS,
    AttemptContext,
    AttemptState,
    ErrorBoundary,
    Failure,
)
from backend.exceptions.categories import NON_RETRYABLE
from backend.exceptions.execution_errors import CircuitOpenError, ContextLengthError, CrewrunError
from backend.exceptions.fingerprint import fingerprint
from backend.exceptions.redaction import set_env_secrets
from backend.exceptions.retry_policy import CategoryPolicy, resolve

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
RECORD_KEYS = {
    "code",
    "fallback_to",
    "category",
    "severity",
    "retryable",
    "message",
    "service",
    "task",
    "agent",
    "attempt",
    "category_attempt",
    "max_attempts",
    "status_code",
    "provider_code",
    "retry_after_s",
    "next_retry_delay_s",
    "fingerprint",
    "exception_type",
    "stack",
    "cause_chain",
    "occurred_at",
    "attempt_started_at",
    "cause",  # an execution-level record's underlying failure (None in an attempt's)
    "tool",  # the tool whose call failed (None for an LLM's)
    "action",  # a tool policy's override of what the category does (None: the category decides)
}


@pytest.fixture(autouse=True)
def no_env_secrets() -> Iterator[None]:
    set_env_secrets({})
    yield
    set_env_secrets({})


def raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    """``exc`` after a real raise: it carries a traceback (and ``cause``)."""
    try:
        raise exc from cause
    except BaseException as err:  # noqa: BLE001
        return err


def openai_error(
    cls: type[openai.APIStatusError],
    status: int,
    message: str,
    *,
    code: str | None,
    type_: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> BaseException:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    resp = httpx.Response(status, json=body, headers=headers or {}, request=httpx.Request("POST", OPENAI_URL))
    return raised(cls(f"Error code: {status} - {body}", response=resp, body=body["error"]))


def rate_limit(retry_after: str = "30") -> BaseException:
    return openai_error(
        openai.RateLimitError,
        429,
        "Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 3.",
        code="rate_limit_exceeded",
        type_="requests",
        headers={"retry-after": retry_after},
    )


def unauthorized(message: str = "Incorrect API key provided: sk-abc***xyz.") -> BaseException:
    return openai_error(openai.AuthenticationError, 401, message, code="invalid_api_key")


def timeout() -> BaseException:
    return raised(openai.APITimeoutError(request=httpx.Request("POST", OPENAI_URL)))


def context(attempt: int = 1, **kw: Any) -> AttemptContext:
    return AttemptContext(task="research", agent="researcher", service="openai", attempt=attempt, **kw)


def fail(
    boundary: ErrorBoundary,
    exc: BaseException,
    state: AttemptState,
    attempt: int = 1,
    table: dict[str, CategoryPolicy] | None = None,
) -> Failure:
    return boundary.failure(exc, state=state, table=table or resolve(), context=context(attempt))


def test_rate_limit_failure_is_a_retryable_application_error_after_retry_after() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))

    failure = fail(boundary, rate_limit(), AttemptState())

    error = failure.error
    assert isinstance(error, ApplicationError)
    assert error.type == "rate_limit"
    assert error.non_retryable is False
    assert failure.final is False
    assert error.next_retry_delay is not None
    assert timedelta(seconds=30) <= error.next_retry_delay <= timedelta(seconds=36)
    assert error.message.startswith(
        "[LLM_RATE_LIMITED] openai 429 — task research, agent researcher, attempt 1/12"
    )
    assert error.message == (
        "[LLM_RATE_LIMITED] openai 429 — task research, agent researcher, attempt 1/12: "
        + failure.record.message.split(": ", 1)[1][:UI_MESSAGE_CHARS]
    )
    assert str(error) == f"rate_limit: {error.message}"  # temporalio prefixes the type


def test_rate_limit_record_is_details_zero() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    exc = rate_limit()

    failure = fail(boundary, exc, AttemptState())

    record = failure.error.details[0]
    assert record == failure.record.to_dict()  # the details carry the record as JSON
    assert set(record) == RECORD_KEYS
    assert {
        k: record[k] for k in ("code", "category", "severity", "retryable", "service", "task", "agent")
    } == {
        "code": "LLM_RATE_LIMITED",
        "category": "rate_limit",
        "severity": "low",
        "retryable": True,
        "service": "openai",
        "task": "research",
        "agent": "researcher",
    }
    assert (record["attempt"], record["category_attempt"], record["max_attempts"]) == (1, 1, 12)
    assert (record["status_code"], record["provider_code"], record["retry_after_s"]) == (
        429,
        "rate_limit_exceeded",
        30.0,
    )
    assert record["next_retry_delay_s"] == round(failure.error.next_retry_delay.total_seconds(), 3)
    assert record["exception_type"] == "openai.RateLimitError"
    assert record["message"] == f"RateLimitError: {exc}"
    assert record["fingerprint"] == fingerprint(
        "LLM_RATE_LIMITED", "openai.RateLimitError", record["message"]
    )
    assert record["cause_chain"] == [{"type": "openai.RateLimitError", "message": str(exc)}]
    assert record["stack"].startswith("Traceback (most recent call last):\n")
    assert record["stack"].endswith(f"openai.RateLimitError: {exc}\n")
    assert datetime.fromisoformat(record["occurred_at"]).tzinfo is not None
    assert record["attempt_started_at"] is None
    json.dumps(record)  # the record is plain JSON: Temporal's converter and the DB take it as is


def test_record_carries_the_attempt_start_and_the_temporal_attempt_number() -> None:
    started = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
    boundary = ErrorBoundary(rng=random.Random(0))

    failure = boundary.failure(
        rate_limit(), state=AttemptState(), table=resolve(), context=context(attempt=7, started_at=started)
    )

    assert failure.record.attempt_started_at == "2025-03-14T12:00:00+00:00"
    assert failure.record.attempt == 7
    assert failure.record.category_attempt == 1


def test_rate_limit_budget_of_12_makes_the_12th_failure_final() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()

    failures = [fail(boundary, rate_limit(), state, attempt=n) for n in range(1, 13)]

    for n, failure in enumerate(failures[:11], start=1):
        assert failure.final is False
        assert failure.error.non_retryable is False
        assert failure.error.next_retry_delay is not None
        assert failure.error.next_retry_delay >= timedelta(seconds=30)
        assert f"attempt {n}/12:" in failure.error.message
    last = failures[-1]
    assert last.final is True
    assert last.error.non_retryable is True
    assert last.error.next_retry_delay is None
    assert last.record.retryable is False
    assert last.record.next_retry_delay_s is None
    assert "attempt 12/12:" in last.error.message
    assert state.failures == {"rate_limit": 12}


def test_unauthorized_is_final_on_the_first_failure() -> None:
    failure = fail(ErrorBoundary(rng=random.Random(0)), unauthorized(), AttemptState())

    assert failure.final is True
    assert failure.error.non_retryable is True
    assert failure.error.next_retry_delay is None
    assert failure.error.type == "authentication"
    assert failure.record.code == "LLM_AUTH_FAILED"
    assert failure.record.severity == "critical"
    assert failure.error.message.startswith(
        "[LLM_AUTH_FAILED] openai 401 — task research, agent researcher, attempt 1/1: "
    )


def test_categories_have_independent_budgets() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()

    outcomes = []
    for n in range(1, 6):
        outcomes.append(("rate_limit", fail(boundary, rate_limit("1"), state, attempt=2 * n - 1).final))
        outcomes.append(("timeout", fail(boundary, timeout(), state, attempt=2 * n).final))

    assert outcomes == [
        ("rate_limit", False),
        ("timeout", False),
        ("rate_limit", False),
        ("timeout", False),
        ("rate_limit", False),
        ("timeout", False),
        ("rate_limit", False),
        ("timeout", False),
        ("rate_limit", False),
        ("timeout", True),  # the timeout budget of 5 is spent
    ]
    assert state.failures == {"rate_limit": 5, "timeout": 5}
    assert fail(boundary, rate_limit("1"), state, attempt=11).final is False  # 6/12: budget left


def test_timeout_message_names_the_exception_type_when_there_is_no_status() -> None:
    failure = fail(ErrorBoundary(rng=random.Random(0)), timeout(), AttemptState())

    assert failure.error.message == (
        "[LLM_TIMEOUT] openai APITimeoutError — task research, agent researcher, attempt 1/5: "
        "Request timed out."
    )
    assert failure.record.status_code is None


def test_timeout_delay_is_the_jittered_backoff() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()

    delays = [fail(boundary, timeout(), state).error.next_retry_delay for _ in range(4)]

    bases = [2, 4, 8, 16]
    assert all(
        timedelta(seconds=b * 0.8) <= d <= timedelta(seconds=b) for b, d in zip(bases, delays, strict=True)
    )


def test_unknown_error_is_internal_with_two_attempts() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()

    first = fail(boundary, raised(KeyError("result")), state)
    second = fail(boundary, raised(KeyError("result")), state)

    assert first.record.code == second.record.code == "INTERNAL_ERROR"
    assert first.error.type == "internal"
    assert (first.final, second.final) == (False, True)
    assert first.error.message == (
        "[INTERNAL_ERROR] openai KeyError — task research, agent researcher, attempt 1/2: 'result'"
    )
    assert second.record.max_attempts == 2
    assert first.record.fingerprint == second.record.fingerprint


def test_non_retryable_code_is_final_even_when_the_table_would_retry() -> None:
    table = resolve()
    table["context_length"] = CategoryPolicy(5)

    failure = fail(
        ErrorBoundary(rng=random.Random(0)),
        raised(ContextLengthError("too long")),
        AttemptState(),
        table=table,
    )

    assert failure.final is True
    assert failure.record.max_attempts == 5


def test_category_missing_from_the_table_gets_one_attempt() -> None:
    table = {k: v for k, v in resolve().items() if k != "network"}

    failure = fail(
        ErrorBoundary(rng=random.Random(0)),
        raised(ConnectionRefusedError("refused")),
        AttemptState(),
        table=table,
    )

    assert failure.final is True
    assert failure.record.max_attempts == 1
    assert failure.record.code == "NETWORK_CONNECT_FAILED"


def test_overridden_budget_is_honoured() -> None:
    table = resolve({"rate_limit": {"maximum_attempts": 3}})
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()

    finals = [fail(boundary, rate_limit("1"), state, table=table).final for _ in range(3)]

    assert finals == [False, False, True]


def test_default_rng_is_created_when_none_given() -> None:
    failure = fail(ErrorBoundary(), rate_limit("2"), AttemptState())

    assert timedelta(seconds=2) <= failure.error.next_retry_delay <= timedelta(seconds=2.4)


def test_same_seed_gives_the_same_delays() -> None:
    first = fail(ErrorBoundary(rng=random.Random(5)), timeout(), AttemptState()).error.next_retry_delay
    second = fail(ErrorBoundary(rng=random.Random(5)), timeout(), AttemptState()).error.next_retry_delay

    assert first == second


def test_cause_chain_lists_every_exception_redacted() -> None:
    inner = raised(ConnectionResetError("reset; api_key=abcdef123456"))
    outer = raised(RuntimeError("LLM call failed"), inner)

    failure = fail(ErrorBoundary(rng=random.Random(0)), outer, AttemptState())

    assert failure.record.code == "NETWORK_CONNECTION_RESET"
    assert failure.record.exception_type == "ConnectionResetError"
    assert failure.record.message == "ConnectionResetError: reset; api_key=[REDACTED]"
    assert failure.record.cause_chain == [
        {"type": "RuntimeError", "message": "LLM call failed"},
        {"type": "ConnectionResetError", "message": "reset; api_key=[REDACTED]"},
    ]


def test_long_messages_are_bounded() -> None:
    exc = raised(RuntimeError("x" * 5000))

    failure = fail(ErrorBoundary(rng=random.Random(0)), exc, AttemptState())

    assert len(failure.record.message) == 2000
    assert len(failure.record.cause_chain[0]["message"]) == 500
    assert failure.error.message.endswith(": " + "x" * UI_MESSAGE_CHARS)


# ---------------------------------------------------------------- attempt state


def test_attempt_state_round_trips_through_heartbeat_details() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()
    fail(boundary, rate_limit(), state)
    fail(boundary, timeout(), state)
    fail(boundary, timeout(), state)

    details = state.to_details()
    restored = AttemptState.from_details([json.loads(json.dumps(details))])

    assert restored == state
    assert restored.failures == {"rate_limit": 1, "timeout": 2}
    assert [h["code"] for h in restored.history] == ["LLM_RATE_LIMITED", "LLM_TIMEOUT", "LLM_TIMEOUT"]
    assert set(restored.history[0]) == {"attempt", "code", "category", "occurred_at", "next_retry_delay_s"}


def test_from_details_ignores_foreign_heartbeat_payloads() -> None:
    assert AttemptState.from_details([]) == AttemptState()
    assert AttemptState.from_details(["progress", 42, None, {"step": 3}, ["failures"]]) == AttemptState()


def test_from_details_takes_the_last_state_among_foreign_payloads() -> None:
    older = {"failures": {"network": 1}, "history": []}
    newer = {"failures": {"network": 2, "timeout": 1}, "history": [{"code": "LLM_TIMEOUT"}]}

    restored = AttemptState.from_details([older, {"step": 3}, newer, "tick"])

    assert restored == AttemptState({"network": 2, "timeout": 1}, [{"code": "LLM_TIMEOUT"}])


def test_from_details_coerces_counts_and_tolerates_empty_fields() -> None:
    assert AttemptState.from_details([{"failures": {"network": "3"}}]) == AttemptState({"network": 3}, [])
    assert AttemptState.from_details([{"failures": None, "history": None}]) == AttemptState()


def test_from_details_caps_history() -> None:
    history = [{"attempt": n} for n in range(30)]

    restored = AttemptState.from_details([{"failures": {}, "history": history}])

    assert restored.history == history[-HISTORY_LIMIT:]


def test_to_details_caps_history_and_copies() -> None:
    state = AttemptState({"network": 1}, [{"attempt": n} for n in range(25)])

    details = state.to_details()
    details["failures"]["network"] = 99

    assert details["history"] == [{"attempt": n} for n in range(5, 25)]
    assert state.failures == {"network": 1}


def test_history_is_capped_at_20_entries() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()

    for n in range(1, 26):
        fail(boundary, raised(CircuitOpenError("circuit of openai is open")), state, attempt=n)

    assert HISTORY_LIMIT == 20
    assert len(state.history) == 20
    assert [h["attempt"] for h in state.history] == list(range(6, 26))
    assert state.failures == {"circuit_open": 25}


# ---------------------------------------------------------------- secrets


def test_secrets_in_the_provider_body_reach_neither_record_nor_message() -> None:
    env_secret = "canary-env-value-5e1f0c2a9b7d"
    set_env_secrets({"OPENAI_API_KEY": env_secret, "HOME": "/root"})
    exc = unauthorized(
        f"Incorrect API key provided: sk-canary-1234567890. The key {env_secret} is not valid; "
        f"see https://platform.openai.com/account?api_key={env_secret}x&ref=1"
    )

    failure = fail(ErrorBoundary(rng=random.Random(0)), exc, AttemptState())

    dumped = json.dumps(failure.record.to_dict())
    surfaces = [dumped, failure.error.message, str(failure.error), json.dumps(list(failure.error.details))]
    for text in surfaces:
        assert "sk-canary-1234567890" not in text
        assert env_secret not in text
        assert "canary-env-value" not in text
    assert "[REDACTED]" in failure.record.message
    assert "[REDACTED]" in failure.record.stack
    assert "[REDACTED]" in failure.record.cause_chain[0]["message"]


# ---------------------------------------------------------------- huge Retry-After


@pytest.mark.parametrize("retry_after", ["inf", "1e15", "86401"])
@pytest.mark.parametrize("seed", [0, 7])
def test_huge_retry_after_waits_a_day_plus_jitter(retry_after: str, seed: int) -> None:
    failure = fail(ErrorBoundary(rng=random.Random(seed)), rate_limit(retry_after), AttemptState())

    assert isinstance(failure, Failure)
    assert failure.final is False
    assert failure.error.non_retryable is False
    assert failure.error.next_retry_delay is not None
    assert timedelta(seconds=86_400) <= failure.error.next_retry_delay <= timedelta(seconds=86_400 * 1.2)
    assert failure.record.retry_after_s == 86_400.0
    assert failure.record.next_retry_delay_s == round(failure.error.next_retry_delay.total_seconds(), 3)
    json.dumps(failure.record.to_dict(), allow_nan=False)  # capped: no Infinity in the record


def test_infinite_retry_after_of_a_crewrun_error_is_capped_by_the_delay() -> None:
    # Not from a header, so the classifier's cap does not apply: next_delay's own cap does.
    failure = fail(
        ErrorBoundary(rng=random.Random(0)),
        raised(CrewrunError("parked", code="LLM_RATE_LIMITED", retry_after_s=float("inf"))),
        AttemptState(),
    )

    assert failure.final is False
    assert failure.error.next_retry_delay is not None
    assert timedelta(seconds=86_400) <= failure.error.next_retry_delay <= timedelta(seconds=86_400 * 1.2)


def test_spent_provider_budget_switches_to_the_fallback_llm_with_fresh_budgets() -> None:

    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState(failures={"external_service": 5, "network": 2})
    switched = boundary.failure(
        CrewrunError("503", code="LLM_PROVIDER_ERROR"),
        state=state,
        table=resolve(),
        context=context(6),
        fallback="backup-model",
    )
    assert (switched.final, switched.error.non_retryable) == (False, False)
    assert switched.error.next_retry_delay == timedelta(seconds=0.1)
    assert switched.record.fallback_to == "backup-model"
    assert (state.llm_index, state.failures) == (1, {})
    assert AttemptState.from_details([state.to_details()]).llm_index == 1

    # Quota has no retries of its own: with a fallback left it switches at once; without, final.
    quota = boundary.failure(
        CrewrunError("billing", code="LLM_QUOTA_EXHAUSTED"),
        state=AttemptState(),
        table=resolve(),
        context=context(1),
        fallback="backup-model",
    )
    assert quota.final is False and quota.record.fallback_to == "backup-model"
    # Its type must be one Temporal retries: quota's own type is declared non-retryable.
    assert quota.error.type == "quota_exhausted.fallback" and quota.error.type not in NON_RETRYABLE
    assert switched.error.type == "external_service.fallback" and "quota_exhausted" in NON_RETRYABLE
    last = boundary.failure(
        CrewrunError("billing", code="LLM_QUOTA_EXHAUSTED"),
        state=AttemptState(llm_index=1),
        table=resolve(),
        context=context(2),
        fallback=None,
    )
    assert last.final is True and last.record.fallback_to is None and last.error.type == "quota_exhausted"
    # A content refusal is not the provider's trouble: no fallback.
    refused = boundary.failure(
        ContextLengthError("long"),
        state=AttemptState(),
        table=resolve(),
        context=context(1),
        fallback="backup-model",
    )
    assert refused.final is True and refused.record.fallback_to is None


# --- failed calls: which service, which tool, what the tool's policy forced --------------------


def failed_call(exc: BaseException, call: CallInfo) -> CallFailed:
    aborted = AttemptAborted(exc, call)
    try:
        raise CallFailed(aborted)
    except CallFailed as err:
        return err


def tool_429(retry_after: str = "3") -> BaseException:
    response = httpx.Response(
        429, request=httpx.Request("POST", "http://search.internal/q"), headers={"retry-after": retry_after}
    )
    return raised(httpx.HTTPStatusError("429", request=response.request, response=response))


def test_a_tools_rate_limit_waits_for_its_retry_after_and_names_the_tool_and_its_service() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    call = CallInfo("tool", "web_search", "search-api")

    failure = fail(boundary, failed_call(tool_429(), call), AttemptState())

    record = failure.record
    assert (record.code, record.category, record.tool, record.service) == (
        "TOOL_RATE_LIMITED",
        "rate_limit",
        "web_search",
        "search-api",
    )
    assert record.exception_type == "httpx.HTTPStatusError"  # the call's own error, not the wrapper
    assert 3.0 <= (record.next_retry_delay_s or 0) <= 3.6 and not failure.final
    assert failure.error.message.startswith(
        "[TOOL_RATE_LIMITED] search-api 429 — task research, agent researcher, tool web_search, attempt 1/12"
    )


def test_a_failed_llm_call_names_the_service_it_called_not_the_agents_first_llm() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    call = CallInfo("llm", "gpt-4o-mini", "coworker-gateway")

    record = fail(boundary, failed_call(rate_limit(), call), AttemptState()).record

    assert (record.code, record.service, record.tool) == ("LLM_RATE_LIMITED", "coworker-gateway", None)


@pytest.mark.parametrize("action", ["pause", "fail"])
def test_a_tool_policy_that_forces_an_end_makes_even_a_retryable_failure_final(action: str) -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    call = CallInfo("tool", "web_search", "search-api", action=action)  # type: ignore[arg-type]

    failure = fail(boundary, failed_call(tool_429(), call), AttemptState())

    assert failure.final and failure.error.non_retryable
    assert failure.record.action == action
    assert failure.record.pauses([]) is (action == "pause")
    assert failure.record.pauses(["rate_limit"]) is (action == "pause")


def test_a_tools_trouble_never_moves_the_agent_to_its_fallback_llm() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()
    call = CallInfo("tool", "web_search", "search-api")
    table = resolve({"rate_limit": {"maximum_attempts": 1}})

    failure = boundary.failure(
        failed_call(tool_429(), call), state=state, table=table, context=context(), fallback="gpt-4o"
    )

    assert failure.final and state.llm_index == 0 and failure.record.fallback_to is None


def test_without_a_tool_policy_the_category_decides_whether_a_failure_pauses() -> None:
    record = fail(ErrorBoundary(rng=random.Random(0)), unauthorized(), AttemptState()).record

    assert record.action is None
    assert record.pauses(["authentication"]) and not record.pauses(["quota_exhausted"])


# --- what mutation testing found untested (make mutation) ------------------------------------


def test_a_third_fallback_is_used_after_the_second_is_exhausted() -> None:
    # The agent's chain: its own LLM, then two fallbacks. Each attempt's state rides in heartbeat
    # details to the next; the activity names the next LLM as the boundary's fallback.
    chain = ["gpt-4o", "claude-sonnet", "mistral-large"]
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()
    used = []
    for attempt in range(1, 4):
        used.append(chain[state.llm_index])
        fallback = chain[state.llm_index + 1] if state.llm_index + 1 < len(chain) else None
        failure = boundary.failure(
            CrewrunError("billing", code="LLM_QUOTA_EXHAUSTED"),
            state=state,
            table=resolve(),
            context=context(attempt),
            fallback=fallback,
        )
        state = AttemptState.from_details([state.to_details()])

    assert used == ["gpt-4o", "claude-sonnet", "mistral-large"]
    assert failure.final and failure.record.fallback_to is None
    assert state.llm_index == 2


def test_error_events_no_attempt_could_write_ride_to_the_next_attempt_five_at_most() -> None:
    boundary = ErrorBoundary(rng=random.Random(0))
    state = AttemptState()
    records = [fail(boundary, timeout(), state, attempt=n).record for n in range(1, 8)]
    for record in records:
        state.keep_unrecorded(record)

    details = json.loads(json.dumps(state.to_details()))
    restored = AttemptState.from_details([details])

    assert [r["attempt"] for r in details["unrecorded"]] == [3, 4, 5, 6, 7]
    assert restored.unrecorded == [r.to_dict() for r in records[-5:]]
    many = {"failures": {}, "unrecorded": [{"attempt": n} for n in range(9)]}
    assert AttemptState.from_details([many]).unrecorded == [{"attempt": n} for n in range(4, 9)]


def test_the_records_stack_is_the_traceback_as_python_prints_it() -> None:
    exc = raised(RuntimeError("LLM call failed"), raised(ConnectionResetError("reset by peer")))

    record = fail(ErrorBoundary(rng=random.Random(0)), exc, AttemptState()).record

    assert record.stack == "".join(traceback.format_exception(exc))


def test_a_failed_calls_record_is_about_what_the_call_raised_not_the_runners_wrapper() -> None:
    call = CallInfo("tool", "web_search", "search-api")
    wrapped = failed_call(tool_429(), call)

    record = fail(ErrorBoundary(rng=random.Random(0)), wrapped, AttemptState()).record

    assert record.cause_chain == [{"type": "httpx.HTTPStatusError", "message": "429"}]
    assert record.stack == "".join(traceback.format_exception(wrapped.__cause__))


def test_the_ui_message_names_the_class_of_an_error_from_a_nested_module_by_its_name_only() -> None:
    failure = fail(ErrorBoundary(rng=random.Random(0)), raised(sa.TimeoutError("pool")), AttemptState())

    assert failure.record.exception_type == "sqlalchemy.exc.TimeoutError"
    assert failure.error.message.startswith("[DB_POOL_TIMEOUT] openai TimeoutError — task research,")


def test_the_ui_message_of_an_error_without_text_has_no_detail() -> None:
    failure = fail(ErrorBoundary(rng=random.Random(0)), raised(TimeoutError()), AttemptState())

    assert failure.error.message == (
        "[LLM_TIMEOUT] openai TimeoutError — task research, agent researcher, attempt 1/5: "
    )
