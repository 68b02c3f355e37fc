"""The tool boundary on its own: a real CrewAI tool behind ``guard_tool``, the attempt's calls
(with a circuit breaker on SQLite), the tool's policy, its timeout, and the call journal as the
boundary uses it. No crew, no LLM, no Temporal."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from crewai.tools import BaseTool, tool
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
from pydantic import PrivateAttr
from sqlalchemy.exc import OperationalError

from activities import attempt_calls
from activities.attempt_calls import AttemptAborted, AttemptCalls, CallInfo, serving
from activities.call_journal import encode_tool
from activities.fingerprints import tool_fingerprint
from activities.tool_boundary import (
    DEFAULT_TIMEOUT_S,
    ToolPolicy,
    ToolReportedFailure,
    ToolTimeoutError,
    declared_policy,
    guard_tool,
    service_name,
    tool_key,
    tool_policy,
)
from backend.breaker import BreakerConfig, CircuitBreaker, Permit
from backend.db.database import Database
from backend.exceptions.classifier import classify
from backend.exceptions.execution_errors import CircuitOpenError
from backend.exceptions.redaction import set_env_secrets
from tests.postgres import migrated_sqlite
from tests.support import RecordingJournal

URL = "http://search.internal/v1/search"
NAME = "Web_Lookup"  # tool_key of "Web Lookup"
QUERY = {"query": "otters"}


class Lookup(BaseTool):
    """A user's tool: what ``_run`` does is set per test."""

    name: str = "Web Lookup"
    description: str = "Looks a query up on the search service."
    _answer: Callable[[str], Any] = PrivateAttr()
    _threads: list[threading.Thread] = PrivateAttr(default_factory=list)

    def _run(self, query: str) -> Any:
        self._threads.append(threading.current_thread())
        return self._answer(query)


def lookup(answer: Callable[[str], Any]) -> Lookup:
    found = Lookup()
    found._answer = answer
    return found


def raising(exc: BaseException) -> Callable[[str], Any]:
    def answer(_query: str) -> Any:
        raise exc

    return answer


def status_error(status: int, **headers: str) -> httpx.HTTPStatusError:
    response = httpx.Response(status, request=httpx.Request("POST", URL), headers=headers)
    return httpx.HTTPStatusError(
        f"{status} from the search service", request=response.request, response=response
    )


@pytest.fixture
def breaker(tmp_path: Path) -> Iterator[CircuitBreaker]:
    db = Database.from_url(migrated_sqlite(tmp_path / "breaker.db"))
    yield CircuitBreaker(db, BreakerConfig(consecutive_failures=2, min_calls=100, cooldown_s=30.0))
    db.engine.dispose()


@pytest.fixture(autouse=True)
def no_env_secrets() -> Iterator[None]:
    set_env_secrets({})
    yield
    set_env_secrets({})


# --- the policy ------------------------------------------------------------------------------------


def test_a_policys_action_for_a_code_wins_over_the_one_for_its_category() -> None:
    policy = ToolPolicy(on_failure={"rate_limit": "pause", "TOOL_RATE_LIMITED": "fail"})

    assert policy.action("rate_limit", "TOOL_RATE_LIMITED") == "fail"
    assert policy.action("rate_limit", "LLM_RATE_LIMITED") == "pause"


def test_without_an_entry_bad_arguments_are_told_to_the_llm_and_everything_else_retried() -> None:
    policy = ToolPolicy()

    assert policy.action("validation", "TOOL_ARGUMENTS_INVALID") == "tell_llm"
    assert policy.action("rate_limit", "TOOL_RATE_LIMITED") == "retry"
    assert policy.action("authentication", "TOOL_AUTH_FAILED") == "retry"
    assert (policy.service, policy.timeout_s, policy.on_failure, policy.replay) == (
        None,
        DEFAULT_TIMEOUT_S,
        {},
        True,
    )


def test_settings_override_a_declared_policy_field_by_field_and_on_failure_entry_by_entry() -> None:
    declared = ToolPolicy(
        service="search-api", timeout_s=10, on_failure={"authentication": "tell_llm", "rate_limit": "pause"}
    )

    merged = declared.merged({"timeout_s": 3, "on_failure": {"rate_limit": "fail"}})

    assert merged == ToolPolicy(
        service="search-api", timeout_s=3, on_failure={"authentication": "tell_llm", "rate_limit": "fail"}
    )
    assert declared.merged({"replay": False}) == ToolPolicy(
        service="search-api",
        timeout_s=10,
        on_failure={"authentication": "tell_llm", "rate_limit": "pause"},
        replay=False,
    )


def test_a_policy_declared_on_a_tool_class_holds_for_its_instances_and_one_on_an_instance_for_it_alone() -> (
    None
):
    class Search(Lookup):
        pass

    assert tool_policy(Search, service="search-api", timeout_s=10) is Search
    first, second = Search(), Search()
    assert tool_policy(second, on_failure={"authentication": "pause"}) is second

    assert declared_policy(first) == ToolPolicy(service="search-api", timeout_s=10)
    assert declared_policy(second) == ToolPolicy(on_failure={"authentication": "pause"})
    assert declared_policy(Lookup()) == ToolPolicy()


def test_a_policy_with_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        tool_policy(Lookup(), on_failure={"rate_limit": "explode"})

    assert (
        str(refused.value)
        == "unknown tool actions ['explode']; known: ['retry', 'tell_llm', 'pause', 'fail']"
    )


def test_a_policy_attribute_that_is_no_policy_is_ignored() -> None:
    assert declared_policy(SimpleNamespace(__crewrun_policy__={"service": "x"})) == ToolPolicy()


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Web Lookup", "Web_Lookup"),
        ("  search/api v2.1 (beta)!! ", "search_api_v2.1_beta"),
        ("!!!", "tool"),
        ("x" * 150, "x" * 100),
    ],
)
def test_a_tool_is_known_by_its_name_as_an_identifier(name: str, key: str) -> None:
    assert tool_key(SimpleNamespace(name=name)) == key


def test_a_tool_without_a_name_is_known_by_its_class() -> None:
    assert tool_key(SimpleNamespace(name="")) == "SimpleNamespace"
    assert tool_key(SimpleNamespace()) == "SimpleNamespace"


def test_only_underscores_are_trimmed_from_a_tools_key() -> None:
    assert tool_key(SimpleNamespace(name="_X ray lookup X_")) == "X_ray_lookup_X"


# --- guarding ----------------------------------------------------------------------------------------


def test_outside_an_attempt_a_guarded_tool_is_called_as_it_is() -> None:
    error = status_error(429)
    answering, failing = lookup(lambda q: f"found {q}"), lookup(raising(error))
    guard_tool(answering, ToolPolicy(timeout_s=0.01))
    guard_tool(failing, ToolPolicy())

    assert answering.run(**QUERY) == "found otters"
    with pytest.raises(httpx.HTTPStatusError) as raised:
        failing.run(**QUERY)
    assert raised.value is error
    assert answering._threads == [threading.current_thread()]  # no timeout thread either


def test_guarding_a_tool_twice_guards_it_once() -> None:
    guarded = lookup(lambda q: q)
    assert guard_tool(guarded, ToolPolicy(service="search-api")) is guarded
    run = guarded._run

    assert guard_tool(guarded, ToolPolicy(service="other-api")) is guarded
    assert guarded._run is run
    assert service_name(guarded) == "search-api"


def test_a_tools_breaker_answers_for_its_policys_service_else_for_its_name() -> None:
    named, declared, bare = lookup(str), lookup(str), lookup(str)
    guard_tool(named, ToolPolicy())
    guard_tool(declared, ToolPolicy(service="search-api"))

    assert (service_name(named), service_name(declared), service_name(bare)) == (NAME, "search-api", None)


def test_a_successful_call_counts_and_answers_for_its_service(breaker: CircuitBreaker) -> None:
    guarded = guard_tool(lookup(lambda q: {"hits": [q]}), ToolPolicy(service="search-api"))
    calls = AttemptCalls(breaker=breaker)

    with serving(calls):
        assert guarded.run(**QUERY) == {"hits": ["otters"]}

    assert calls.counts.tool_calls == 1 and calls.aborted is None
    assert calls.outcomes() == [(Permit("search-api"), None)]


def test_a_failed_call_ends_the_attempt_with_what_the_tool_raised(breaker: CircuitBreaker) -> None:
    error = status_error(429, **{"retry-after": "3"})
    guarded = guard_tool(lookup(raising(error)), ToolPolicy(service="search-api"))
    calls = AttemptCalls(breaker=breaker)

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        guarded.run(**QUERY)

    assert aborted.value.error is error
    assert aborted.value.call == CallInfo("tool", NAME, "search-api")
    assert calls.aborted is aborted.value
    assert calls.outcomes(aborted.value.call, "rate_limit") == [(Permit("search-api"), "rate_limit")]


def test_a_function_tool_is_guarded_through_its_function(breaker: CircuitBreaker) -> None:
    @tool("Exchange rate")
    def exchange_rate(currency: str) -> str:
        """The rate of a currency."""
        raise status_error(503)

    guarded = guard_tool(exchange_rate, ToolPolicy())

    with serving(AttemptCalls(breaker=breaker)), pytest.raises(AttemptAborted) as aborted:
        guarded.run(currency="EUR")

    assert aborted.value.call == CallInfo("tool", "Exchange_rate", "Exchange_rate")
    assert service_name(guarded) == "Exchange_rate"


def test_bad_arguments_are_told_to_the_llm_as_crewai_would_and_the_attempt_goes_on(
    breaker: CircuitBreaker,
) -> None:
    guarded = guard_tool(lookup(raising(status_error(400))), ToolPolicy(service="search-api"))
    calls = AttemptCalls(breaker=breaker)

    with serving(calls):
        told = guarded.run(**QUERY)

    assert told == ToolFailure(
        message="Error executing tool: 400 from the search service",
        reason=ToolFailureReason.EXCEPTION,
        code="TOOL_ARGUMENTS_INVALID",
    )
    assert (calls.counts.tool_errors_told, calls.aborted) == (1, None)
    assert calls.outcomes() == [(Permit("search-api"), None)]  # the service answered


def test_what_the_llm_is_told_is_redacted() -> None:
    failing = lookup(raising(ValueError("rejected key sk-abcdef0123456789xyz")))
    guarded = guard_tool(failing, ToolPolicy(on_failure={"internal": "tell_llm"}))

    with serving(AttemptCalls()):
        told = guarded.run(**QUERY)

    assert told.message == "Error executing tool: rejected key [REDACTED]"
    assert told.code == "TOOL_FAILED"


def test_every_failure_told_to_the_llm_is_counted_and_logged_with_the_tool_and_its_code(
    captured_logs: io.StringIO,
) -> None:
    guarded = guard_tool(lookup(raising(status_error(400))), ToolPolicy())
    calls = AttemptCalls()

    with serving(calls):
        guarded.run(**QUERY)
        guarded.run(**QUERY)

    assert calls.counts.tool_errors_told == 2
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    told = [(x["event"], x["tool"], x["code"]) for x in lines if x["event"] == "tool.error_told_to_llm"]
    assert told == [("tool.error_told_to_llm", NAME, "TOOL_ARGUMENTS_INVALID")] * 2


def test_a_policy_entry_for_a_failure_code_decides_a_calls_fate() -> None:
    guarded = guard_tool(
        lookup(raising(status_error(429))), ToolPolicy(on_failure={"TOOL_RATE_LIMITED": "tell_llm"})
    )

    with serving(AttemptCalls()):
        told = guarded.run(**QUERY)

    assert isinstance(told, ToolFailure) and told.code == "TOOL_RATE_LIMITED"


@pytest.mark.parametrize("timeout_s", [None, 5])
def test_a_tool_called_with_positional_arguments_gets_them(timeout_s: float | None) -> None:
    guarded = guard_tool(lookup(lambda q: f"found {q}"), ToolPolicy(timeout_s=timeout_s))

    with serving(AttemptCalls()):
        assert guarded.run("otters") == "found otters"


def test_a_policy_can_tell_the_llm_what_its_category_would_retry() -> None:
    guarded = guard_tool(
        lookup(raising(status_error(429))), ToolPolicy(on_failure={"rate_limit": "tell_llm"})
    )

    with serving(AttemptCalls()):
        told = guarded.run(**QUERY)

    assert isinstance(told, ToolFailure) and told.code == "TOOL_RATE_LIMITED"


@pytest.mark.parametrize("action", ["pause", "fail"])
def test_a_policy_that_pauses_or_fails_ends_the_attempt_naming_its_action(action: str) -> None:
    guarded = guard_tool(lookup(raising(status_error(400))), ToolPolicy(on_failure={"validation": action}))  # type: ignore[dict-item]

    with serving(AttemptCalls()), pytest.raises(AttemptAborted) as aborted:
        guarded.run(**QUERY)

    assert aborted.value.call == CallInfo("tool", NAME, NAME, action=action)  # type: ignore[arg-type]


def test_a_retryable_failure_the_tool_reports_ends_the_attempt_as_the_services_error() -> None:
    busy = ToolFailure(message="index is rebuilding", code="busy", retryable=True)
    guarded = guard_tool(lookup(lambda _q: busy), ToolPolicy())
    calls = AttemptCalls()

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        guarded.run(**QUERY)

    error = aborted.value.error
    assert isinstance(error, ToolReportedFailure)
    assert str(error) == "Web_Lookup reported: index is rebuilding (code: busy)"
    assert classify(error, tool=True).code == "TOOL_SERVICE_ERROR"


def test_a_failure_the_tool_reports_as_final_is_the_llms_to_read() -> None:
    final = ToolFailure(message="no such channel", code="channel_not_found")
    guarded = guard_tool(lookup(lambda _q: final), ToolPolicy(service="chat"))
    calls = AttemptCalls()

    with serving(calls):
        assert guarded.run(**QUERY) is final

    assert calls.aborted is None and calls.counts.tool_errors_told == 0


def test_an_open_breaker_refuses_the_call_without_calling_the_tool(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.record(breaker.acquire("search-api"), "network")
    guarded = guard_tool(lookup(lambda q: q), ToolPolicy(service="search-api"))

    with serving(AttemptCalls(breaker=breaker)), pytest.raises(AttemptAborted) as aborted:
        guarded.run(**QUERY)

    assert isinstance(aborted.value.error, CircuitOpenError)
    assert guarded._threads == []


# --- the timeout -------------------------------------------------------------------------------------


def test_a_tool_that_does_not_answer_within_its_timeout_ends_the_attempt() -> None:
    release = threading.Event()
    hanging = lookup(lambda _q: release.wait(5))
    guarded = guard_tool(hanging, ToolPolicy(timeout_s=0.05))

    try:
        with serving(AttemptCalls()), pytest.raises(AttemptAborted) as aborted:
            guarded.run(**QUERY)
    finally:
        release.set()  # the abandoned thread finishes; its answer is dropped

    error = aborted.value.error
    assert isinstance(error, ToolTimeoutError)
    assert str(error) == "tool Web_Lookup did not answer within 0.05s"
    assert classify(error, tool=True).code == "TOOL_TIMEOUT"


def test_a_tool_with_a_timeout_runs_in_a_thread_of_its_own_that_serves_the_same_attempt() -> None:
    seen: list[AttemptCalls | None] = []
    guarded = guard_tool(lookup(lambda q: seen.append(attempt_calls.current()) or q), ToolPolicy(timeout_s=5))
    calls = AttemptCalls()

    with serving(calls):
        assert guarded.run(**QUERY) == "otters"

    (thread,) = guarded._threads
    assert thread is not threading.current_thread() and thread.name == "tool-Web_Lookup" and thread.daemon
    assert seen == [calls]


@pytest.mark.parametrize("timeout_s", [None, 0])
def test_a_tool_without_a_timeout_runs_in_the_callers_thread(timeout_s: float | None) -> None:
    guarded = guard_tool(lookup(lambda q: q), ToolPolicy(timeout_s=timeout_s))

    with serving(AttemptCalls()):
        assert guarded.run(**QUERY) == "otters"

    assert guarded._threads == [threading.current_thread()]


# --- the call journal --------------------------------------------------------------------------------

FINGERPRINT = tool_fingerprint(NAME, (), QUERY)


def test_a_call_an_earlier_attempt_paid_for_is_served_without_the_tool_or_its_breaker(
    breaker: CircuitBreaker,
) -> None:
    journal = RecordingJournal(tape={FINGERPRINT: encode_tool("otters live in rivers")})
    guarded = guard_tool(lookup(lambda q: q), ToolPolicy(service="search-api"))
    calls = AttemptCalls(breaker=breaker, journal=journal)  # type: ignore[arg-type]

    with serving(calls):
        assert guarded.run(**QUERY) == "otters live in rivers"

    assert guarded._threads == [] and calls.counts.tool_calls == 0 and calls.outcomes() == []
    assert journal.log == [
        ("served?", "tool", FINGERPRINT, True),
        ("replayed", "tool", NAME, "search-api", FINGERPRINT),
    ]


def test_a_live_answer_is_recorded_before_it_is_used() -> None:
    journal = RecordingJournal()
    guarded = guard_tool(lookup(lambda q: {"hits": [q]}), ToolPolicy(service="search-api"))

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        guarded.run(**QUERY)

    assert journal.log == [
        ("served?", "tool", FINGERPRINT, True),
        ("live", "tool", NAME, "search-api", FINGERPRINT, encode_tool({"hits": ["otters"]}), None, None),
    ]


def test_an_answer_without_a_json_form_is_recorded_by_its_hash_only() -> None:
    journal = RecordingJournal()
    answer = object()
    guarded = guard_tool(lookup(lambda _q: answer), ToolPolicy())

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert guarded.run(**QUERY) is answer

    assert journal.log[-1] == ("live", "tool", NAME, NAME, FINGERPRINT, None, None, None)


def test_a_failed_call_is_recorded_as_failed_with_its_code() -> None:
    journal = RecordingJournal()
    guarded = guard_tool(lookup(raising(status_error(429))), ToolPolicy(service="search-api"))

    with serving(AttemptCalls(journal=journal)), pytest.raises(AttemptAborted):  # type: ignore[arg-type]
        guarded.run(**QUERY)

    assert journal.log[-1] == ("failed", "tool", NAME, "search-api", FINGERPRINT, "TOOL_RATE_LIMITED")


def test_a_failed_call_the_journal_cannot_record_ends_the_attempt_with_the_journals_failure() -> None:
    full = OperationalError("INSERT INTO journal_entries", {}, Exception("database or disk is full"))
    guarded = guard_tool(lookup(raising(status_error(429))), ToolPolicy(service="search-api"))
    calls = AttemptCalls(journal=RecordingJournal(fail_writes=full))  # type: ignore[arg-type]

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        guarded.run(**QUERY)

    assert aborted.value.error is full and calls.aborted is aborted.value
    assert aborted.value.call == CallInfo("tool", NAME, "search-api")


def test_a_tool_whose_answers_go_stale_is_never_served() -> None:
    journal = RecordingJournal(tape={FINGERPRINT: encode_tool("stale")})
    guarded = guard_tool(lookup(lambda _q: "fresh"), ToolPolicy(replay=False))

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert guarded.run(**QUERY) == "fresh"

    assert journal.log[0] == ("served?", "tool", FINGERPRINT, False)


def test_an_answer_the_journal_cannot_record_ends_the_attempt() -> None:
    full = OperationalError("INSERT INTO journal_entries", {}, Exception("database or disk is full"))
    journal = RecordingJournal(fail_writes=full)
    guarded = guard_tool(lookup(lambda q: q), ToolPolicy())
    calls = AttemptCalls(journal=journal)  # type: ignore[arg-type]

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        guarded.run(**QUERY)

    assert aborted.value.error is full and calls.aborted is aborted.value


# --- the attempt's calls -----------------------------------------------------------------------------


def test_an_attempt_asks_each_services_breaker_once_and_counts_every_call(breaker: CircuitBreaker) -> None:
    calls = AttemptCalls(breaker=breaker)
    calls.seed(Permit("openai"))
    for call in [
        CallInfo("llm", "gpt-4o", "openai"),
        CallInfo("tool", "a", "search"),
        CallInfo("tool", "b", "search"),
    ]:
        calls.admit(call)
    calls.answered(CallInfo("tool", "a", "search"))

    assert (calls.counts.llm_calls, calls.counts.tool_calls) == (1, 2)
    assert calls.outcomes() == [(Permit("search"), None)]  # openai never answered
    failed = CallInfo("llm", "gpt-4o", "openai")
    assert calls.outcomes(failed, "timeout") == [(Permit("openai"), "timeout"), (Permit("search"), None)]
    assert [s.service for s in breaker.states()] == ["search"]  # openai's permit came with the attempt


def test_the_first_failure_of_an_attempt_is_the_one_it_reports() -> None:
    calls = AttemptCalls()
    first = calls.abort(TimeoutError("first"), CallInfo("tool", "a", "x"))
    calls.abort(TimeoutError("second"), CallInfo("tool", "b", "y"))

    assert calls.aborted is first


def test_a_disabled_breaker_is_not_asked(breaker: CircuitBreaker) -> None:
    off = CircuitBreaker(breaker._db, BreakerConfig(enabled=False))
    calls = AttemptCalls(breaker=off)

    calls.admit(CallInfo("tool", "a", "search"))

    assert calls.outcomes(CallInfo("tool", "a", "search"), "network") == []
