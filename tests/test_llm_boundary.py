"""The LLM boundary on its own: which service an LLM object calls, its SDK's retries turned off,
and ``BoundaryLLM`` in front of a scripted CrewAI LLM (a ``BaseLLM`` subclass that reports usage
as providers do): delegation, the attempt's calls, empty answers, tokens, the call journal. No
crew, no provider, no Temporal."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from crewai import LLM
from crewai.llms.base_llm import BaseLLM
from crewai.llms.retry import _active_llm_rate_limit_retry
from pydantic import BaseModel, PrivateAttr

from activities.attempt_calls import AttemptAborted, AttemptCalls, CallInfo, serving
from activities.call_journal import encode_llm
from activities.fingerprints import llm_fingerprint
from activities.llm_boundary import BoundaryLLM, _count_usage, service_of, without_sdk_retries
from backend.exceptions.execution_errors import LLMOutputError
from backend.pricing import Usage
from tests.support import RecordingJournal

MESSAGES = [{"role": "user", "content": "Summarise otters in one line."}]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


class ScriptedLLM(BaseLLM):
    """Answers (or raises) what its script says, one entry per call, reporting ``usage`` to
    CrewAI's usage hook the way the native providers do."""

    _script: list[Any] = PrivateAttr(default_factory=list)
    _usage: dict[str, int] | None = PrivateAttr(default=None)
    _seen: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _capabilities: dict[str, Any] = PrivateAttr(default_factory=dict)

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        self._seen.append(
            {
                "messages": messages,
                "tools": tools,
                "callbacks": callbacks,
                "available_functions": available_functions,
                "from_task": from_task,
                "from_agent": from_agent,
                "response_model": response_model,
                "stop": list(self.stop_sequences),
            }
        )
        if self._usage is not None:
            self._track_token_usage_internal(dict(self._usage))
        answer = self._script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def supports_function_calling(self) -> bool:
        return bool(self._capabilities.get("function_calling", True))

    def supports_stop_words(self) -> bool:
        return bool(self._capabilities.get("stop_words", True))

    def get_context_window_size(self) -> int:
        return int(self._capabilities.get("context_window", 128_000))

    def supports_multimodal(self) -> bool:
        return bool(self._capabilities.get("multimodal", False))


def scripted(*answers: Any, usage: dict[str, int] | None = None, **fields: Any) -> ScriptedLLM:
    llm = ScriptedLLM(**{"model": "gpt-4o-mini", "provider": "openai", **fields})
    llm._script = list(answers)
    llm._usage = usage
    return llm


def rate_limited() -> openai.RateLimitError:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    response = httpx.Response(429, request=request, json={"error": {"code": "rate_limit_exceeded"}})
    return openai.RateLimitError(
        "Rate limit reached", response=response, body={"code": "rate_limit_exceeded"}
    )


@pytest.fixture(autouse=True)
def usage_counting_installed_afresh() -> Iterator[None]:
    """Counting is installed on CrewAI's usage hook once, at import: here it is installed again on
    the hook as CrewAI defines it (twice: a second install must change nothing), and put back."""
    installed = BaseLLM._track_token_usage_internal
    BaseLLM._track_token_usage_internal = inspect.unwrap(installed)  # type: ignore[method-assign]
    _count_usage()
    _count_usage()
    yield
    BaseLLM._track_token_usage_internal = installed  # type: ignore[method-assign]


def test_counting_wraps_crewais_own_usage_hook_once() -> None:
    hook = BaseLLM._track_token_usage_internal

    assert hook._crewrun_counted is True  # type: ignore[attr-defined]
    crewais = inspect.unwrap(hook)
    assert hook.__wrapped__ is crewais  # type: ignore[attr-defined]
    assert (crewais.__module__, crewais.__qualname__) == (
        "crewai.llms.base_llm",
        "BaseLLM._track_token_usage_internal",
    )


def test_an_llm_used_without_a_boundary_counts_its_usage_as_crewai_does() -> None:
    bare = scripted("ok", usage=USAGE)

    assert bare.call(MESSAGES) == "ok"

    assert bare.get_token_usage_summary().total_tokens == 17


def test_a_provider_that_reports_no_usage_counts_nothing_and_the_call_goes_on() -> None:
    inner = scripted("ok")
    boundary = BoundaryLLM.wrap(inner, "researcher")
    journal = RecordingJournal()

    def no_usage(*_args: Any, **_kwargs: Any) -> str:
        inner._track_token_usage_internal(None)  # type: ignore[arg-type]
        return "ok"

    inner.__dict__["call"] = no_usage
    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert boundary.call(MESSAGES) == "ok"

    assert boundary.get_token_usage_summary().total_tokens == 0
    assert journal.log[-1][6] == Usage()


# --- which service, which retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("llm", "service"),
    [
        (SimpleNamespace(crewrun_service="gateway", base_url="https://api.openai.com/v1"), "gateway"),
        (SimpleNamespace(crewrun_service="", base_url="https://llm.internal:8443/v1"), "llm.internal"),
        (
            SimpleNamespace(base_url=None, api_base="https://proxy.example/v1", provider="openai"),
            "proxy.example",
        ),
        (SimpleNamespace(base_url="not a url", provider="anthropic"), "anthropic"),
        (SimpleNamespace(provider="mistral"), "mistral"),
        (SimpleNamespace(provider=""), "llm"),
        (SimpleNamespace(provider=None, crewrun_service=7), "llm"),
        (SimpleNamespace(base_url=httpx.URL("https://llm.internal/v1"), provider="openai"), "openai"),
        (SimpleNamespace(), "llm"),
    ],
    ids=[
        "configured",
        "base-url-host",
        "api-base-host",
        "hostless-url",
        "provider",
        "empty-provider",
        "no-text",
        "endpoint-not-text",
        "nothing",
    ],
)
def test_an_llms_service_is_the_configured_one_else_its_endpoints_host_else_its_provider(
    llm: Any, service: str
) -> None:
    assert service_of(llm) == service


class FakeClient:
    def __init__(self, max_retries: int, pool: object, rebuildable: bool = True) -> None:
        self.max_retries = max_retries
        self.pool = pool
        if rebuildable:
            self.with_options = lambda **kw: FakeClient(kw["max_retries"], pool)


def test_sdk_clients_that_retry_are_rebuilt_without_retries_sharing_their_connection_pool() -> None:
    pool = object()
    retrying, rebuilt_never = FakeClient(2, pool), FakeClient(0, pool)
    llm = SimpleNamespace(_client=retrying, _async_client=rebuilt_never, max_retries=2)

    assert without_sdk_retries(llm) is llm

    assert llm._client is not retrying and (llm._client.max_retries, llm._client.pool) == (0, pool)
    assert llm._async_client is rebuilt_never
    assert llm.max_retries == 0


def test_a_client_that_cannot_be_rebuilt_and_an_llm_without_clients_are_left_alone() -> None:
    fixed = FakeClient(2, object(), rebuildable=False)
    unknown = SimpleNamespace(with_options=lambda **_kw: pytest.fail("rebuilt"))  # says nothing of retries
    llm = SimpleNamespace(_client=fixed, _async_client=unknown)
    bare = SimpleNamespace()

    without_sdk_retries(llm)
    without_sdk_retries(bare)

    assert llm._client is fixed and fixed.max_retries == 2
    assert llm._async_client is unknown
    assert vars(bare) == {}


def test_a_native_openai_llm_of_crewai_retries_nothing_once_wrapped() -> None:
    native = LLM(model="gpt-4o-mini", api_key="sk-test-not-a-key-000")

    boundary = BoundaryLLM.wrap(native, "researcher")

    assert boundary.inner is native
    assert (native._client.max_retries, native._async_client.max_retries, native.max_retries) == (0, 0, 0)


# --- wrapping ----------------------------------------------------------------------------------------


def test_a_boundary_stands_in_for_its_llm_and_wrapping_it_again_changes_nothing() -> None:
    inner = scripted(model="claude-sonnet-4", provider="anthropic", stop=["\nObservation:"], temperature=0.3)

    boundary = BoundaryLLM.wrap(inner, "researcher")

    assert (boundary.model, boundary.provider, boundary.stop, boundary.temperature) == (
        "claude-sonnet-4",
        "anthropic",
        ["\nObservation:"],
        0.3,
    )
    assert BoundaryLLM.wrap(boundary, "writer") is boundary


def test_an_llm_object_without_crewais_fields_is_wrapped_with_defaults() -> None:
    boundary = BoundaryLLM.wrap(SimpleNamespace(), "researcher")

    assert (boundary.model, boundary.provider, boundary.stop, boundary.temperature) == (
        "unknown",
        "openai",
        [],
        None,
    )


def test_what_a_boundary_supports_is_what_the_llm_it_calls_now_supports() -> None:
    own, fallback = scripted(), scripted()
    fallback._capabilities = {
        "function_calling": False,
        "stop_words": False,
        "context_window": 8_192,
        "multimodal": True,
    }
    boundary = BoundaryLLM.wrap(own, "researcher")

    before = (
        boundary.supports_function_calling(),
        boundary.supports_stop_words(),
        boundary.get_context_window_size(),
        boundary.supports_multimodal(),
    )
    with serving(AttemptCalls(llm_overrides={"researcher": fallback})):
        after = (
            boundary.supports_function_calling(),
            boundary.supports_stop_words(),
            boundary.get_context_window_size(),
            boundary.supports_multimodal(),
        )

    assert before == (True, True, 128_000, False)
    assert after == (False, False, 8_192, True)


# --- calls outside an attempt ------------------------------------------------------------------------


def test_outside_an_attempt_a_call_is_delegated_and_its_error_raised_as_it_is() -> None:
    error = rate_limited()
    boundary = BoundaryLLM.wrap(scripted("Otters are playful.", error), "researcher")

    assert boundary.call(MESSAGES) == "Otters are playful."
    with pytest.raises(openai.RateLimitError) as raised:
        boundary.call(MESSAGES)
    assert raised.value is error


@pytest.mark.parametrize("empty", [None, "", "  \n"])
def test_an_empty_answer_is_an_llm_output_error(empty: str | None) -> None:
    boundary = BoundaryLLM.wrap(scripted(empty, empty), "researcher")
    calls = AttemptCalls()

    with pytest.raises(LLMOutputError, match="^the LLM returned an empty answer$"):
        boundary.call(MESSAGES)
    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        boundary.call(MESSAGES)

    assert isinstance(aborted.value.error, LLMOutputError) and calls.aborted is aborted.value
    assert aborted.value.call == CallInfo("llm", "gpt-4o-mini", "openai")


# --- calls in an attempt -----------------------------------------------------------------------------


class Summary(BaseModel):
    line: str


def test_every_argument_reaches_the_llm_with_the_boundarys_stop_words() -> None:
    inner = scripted("ok", stop=[])
    boundary = BoundaryLLM.wrap(inner, "researcher")
    boundary.stop = ["\nObservation:"]  # CrewAI sets the agent's stop words on the LLM it knows
    tools, callbacks, functions = [{"name": "lookup"}], [object()], {"lookup": print}
    task, agent = object(), object()

    with serving(AttemptCalls()):
        boundary.call(MESSAGES, tools, callbacks, functions, task, agent, Summary)

    assert inner._seen == [
        {
            "messages": MESSAGES,
            "tools": tools,
            "callbacks": callbacks,
            "available_functions": functions,
            "from_task": task,
            "from_agent": agent,
            "response_model": Summary,
            "stop": ["\nObservation:"],
        }
    ]
    assert inner.stop_sequences == []  # only for the call


async def test_an_async_call_is_the_same_call_in_a_thread_of_the_attempt() -> None:
    inner = scripted("ok")
    boundary = BoundaryLLM.wrap(inner, "researcher")
    calls = AttemptCalls()
    tools, callbacks, functions = [{"name": "lookup"}], [object()], {"lookup": print}
    task, agent = object(), object()

    with serving(calls):
        answer = await boundary.acall(MESSAGES, tools, callbacks, functions, task, agent, Summary)

    assert answer == "ok" and calls.counts.llm_calls == 1
    assert inner._seen == [
        {
            "messages": MESSAGES,
            "tools": tools,
            "callbacks": callbacks,
            "available_functions": functions,
            "from_task": task,
            "from_agent": agent,
            "response_model": Summary,
            "stop": [],
        }
    ]


def test_an_attempts_fallback_llm_answers_in_place_of_the_agents_own() -> None:
    own, fallback = scripted("from own"), scripted("from fallback", model="mistral-large", provider="mistral")
    boundary = BoundaryLLM.wrap(own, "researcher")
    calls = AttemptCalls(llm_overrides={"researcher": fallback, "writer": scripted("other agent's")})

    with serving(calls):
        assert boundary.call(MESSAGES) == "from fallback"

    assert own._seen == [] and calls.outcomes() == []  # no breaker: nothing to record
    assert calls.counts.llm_calls == 1


def test_a_provider_error_ends_the_attempt_after_one_call_crewais_rate_limit_loop_is_off() -> None:
    error = rate_limited()
    inner = scripted(error, "never reached", "never reached", base_url="https://llm.internal/v1")
    boundary = BoundaryLLM.wrap(inner, "researcher")
    calls = AttemptCalls()

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        boundary.call(MESSAGES)

    assert len(inner._seen) == 1
    assert aborted.value.error is error and calls.aborted is aborted.value
    assert aborted.value.call == CallInfo("llm", "gpt-4o-mini", "llm.internal")
    assert _active_llm_rate_limit_retry.get() is False  # back as it was


def test_an_attempt_ended_deeper_inside_the_call_leaves_as_it_is() -> None:
    deeper = AttemptAborted(TimeoutError("tool"), CallInfo("tool", "lookup", "search"))
    boundary = BoundaryLLM.wrap(scripted(deeper), "researcher")
    calls = AttemptCalls()

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        boundary.call(MESSAGES)

    assert aborted.value is deeper and calls.aborted is None


def test_the_tokens_a_call_used_are_counted_on_the_boundary_and_on_its_llm() -> None:
    inner = scripted("one", "two", usage=USAGE)
    boundary = BoundaryLLM.wrap(inner, "researcher")

    with serving(AttemptCalls()):
        boundary.call(MESSAGES)
    boundary.call(MESSAGES)  # outside an attempt too

    for llm in (boundary, inner):
        summary = llm.get_token_usage_summary()
        assert (summary.prompt_tokens, summary.completion_tokens, summary.total_tokens) == (24, 10, 34)


def test_concurrent_calls_through_one_llm_each_count_only_their_own_tokens() -> None:
    shared = scripted("a", "b")
    both_reported = threading.Barrier(2, timeout=10)
    original_call = ScriptedLLM.call

    def report_then_wait(self: ScriptedLLM, messages: Any, **kwargs: Any) -> Any:
        tokens = int(messages[0]["content"])
        self._track_token_usage_internal(
            {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1}
        )
        both_reported.wait()  # each call's report is in before either call ends
        return original_call(self, messages, **kwargs)

    first, second = BoundaryLLM.wrap(shared, "a"), BoundaryLLM.wrap(shared, "b")
    shared.__dict__["call"] = report_then_wait.__get__(shared)

    with ThreadPoolExecutor(2) as pool:
        list(
            pool.map(
                lambda pair: pair[0].call([{"role": "user", "content": pair[1]}]),
                [(first, "100"), (second, "7")],
            )
        )

    assert first.get_token_usage_summary().prompt_tokens == 100
    assert second.get_token_usage_summary().prompt_tokens == 7


# --- the call journal --------------------------------------------------------------------------------

FINGERPRINT = llm_fingerprint("gpt-4o-mini", MESSAGES, None, None, [])


def test_an_answer_an_earlier_attempt_paid_for_is_served_without_a_request() -> None:
    inner = scripted("live")
    journal = RecordingJournal(tape={FINGERPRINT: encode_llm("Otters are playful.")})
    boundary = BoundaryLLM.wrap(inner, "researcher")
    calls = AttemptCalls(journal=journal)  # type: ignore[arg-type]

    with serving(calls):
        assert boundary.call(MESSAGES) == "Otters are playful."

    assert inner._seen == [] and calls.counts.llm_calls == 0
    assert journal.log == [
        ("served?", "llm", FINGERPRINT, True),
        ("replayed", "llm", "gpt-4o-mini", "openai", FINGERPRINT),
    ]


def test_a_structured_answer_is_served_as_the_model_the_call_asked_for() -> None:
    fingerprint = llm_fingerprint("gpt-4o-mini", MESSAGES, None, Summary, [])
    journal = RecordingJournal(tape={fingerprint: encode_llm(Summary(line="Otters hold hands."))})
    boundary = BoundaryLLM.wrap(scripted(), "researcher")

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert boundary.call(MESSAGES, response_model=Summary) == Summary(line="Otters hold hands.")


def test_a_live_answer_is_recorded_with_its_tokens_and_provider_before_it_is_used() -> None:
    journal = RecordingJournal()
    boundary = BoundaryLLM.wrap(scripted("Otters are playful.", usage=USAGE), "researcher")

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        boundary.call(MESSAGES)

    assert journal.log[-1] == (
        "live",
        "llm",
        "gpt-4o-mini",
        "openai",
        FINGERPRINT,
        encode_llm("Otters are playful."),
        Usage(input_tokens=12, output_tokens=5),
        "openai",
    )


def test_an_answer_without_a_json_form_is_recorded_by_its_hash_only() -> None:
    journal = RecordingJournal()
    odd = object()
    boundary = BoundaryLLM.wrap(scripted(odd), "researcher")

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert boundary.call(MESSAGES) is odd

    assert journal.log[-1] == ("live", "llm", "gpt-4o-mini", "openai", FINGERPRINT, None, Usage(), "openai")


def test_a_request_is_known_by_its_tools_and_stop_words_too() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    fingerprint = llm_fingerprint("gpt-4o-mini", MESSAGES, tools, None, ["\nObservation:"])
    inner = scripted("live", stop=["\nObservation:"])
    journal = RecordingJournal(tape={fingerprint: encode_llm("served")})
    boundary = BoundaryLLM.wrap(inner, "researcher")

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert boundary.call(MESSAGES, tools=tools) == "served"
        assert boundary.call(MESSAGES) == "live"  # no tools: another request


def test_an_llm_object_that_names_no_model_or_provider_is_recorded_as_unknown() -> None:
    class Bare:
        """An LLM object of a user's own: it answers, and says nothing else about itself."""

        def call(self, messages: Any, **_kwargs: Any) -> str:
            return "ok"

    journal = RecordingJournal()
    boundary = BoundaryLLM.wrap(Bare(), "researcher")

    with serving(AttemptCalls(journal=journal)):  # type: ignore[arg-type]
        assert boundary.call(MESSAGES) == "ok"

    fingerprint = llm_fingerprint("unknown", MESSAGES, None, None, [])
    assert journal.log[-1] == ("live", "llm", "unknown", "llm", fingerprint, encode_llm("ok"), Usage(), None)


def test_a_served_answer_the_journal_cannot_record_ends_the_attempt() -> None:
    full = OSError(28, "No space left on device")
    journal = RecordingJournal(tape={FINGERPRINT: encode_llm("paid for")}, fail_writes=full)
    boundary = BoundaryLLM.wrap(scripted(), "researcher")
    calls = AttemptCalls(journal=journal)  # type: ignore[arg-type]

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        boundary.call(MESSAGES)

    assert aborted.value.error is full and aborted.value.call == CallInfo("llm", "gpt-4o-mini", "openai")


def test_a_failed_call_the_journal_cannot_record_ends_the_attempt_with_the_journals_failure() -> None:
    full = OSError(28, "No space left on device")
    boundary = BoundaryLLM.wrap(scripted(rate_limited()), "researcher")
    calls = AttemptCalls(journal=RecordingJournal(fail_writes=full))  # type: ignore[arg-type]

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        boundary.call(MESSAGES)

    assert aborted.value.error is full and calls.aborted is aborted.value
    assert aborted.value.call == CallInfo("llm", "gpt-4o-mini", "openai")


def test_a_failed_call_is_recorded_as_failed_with_its_code() -> None:
    journal = RecordingJournal()
    boundary = BoundaryLLM.wrap(scripted(rate_limited()), "researcher")

    with serving(AttemptCalls(journal=journal)), pytest.raises(AttemptAborted):  # type: ignore[arg-type]
        boundary.call(MESSAGES)

    assert journal.log[-1] == ("failed", "llm", "gpt-4o-mini", "openai", FINGERPRINT, "LLM_RATE_LIMITED")


def test_an_answer_the_journal_cannot_record_ends_the_attempt() -> None:
    full = OSError(28, "No space left on device")
    boundary = BoundaryLLM.wrap(scripted("ok"), "researcher")
    calls = AttemptCalls(journal=RecordingJournal(fail_writes=full))  # type: ignore[arg-type]

    with serving(calls), pytest.raises(AttemptAborted) as aborted:
        boundary.call(MESSAGES)

    assert aborted.value.error is full and calls.aborted is aborted.value
