"""The LLM boundary: every model call of a crew task goes through :class:`BoundaryLLM`.

It stands in for an LLM object wherever CrewAI looks for one (an agent's ``llm`` and
``function_calling_llm``, a hierarchical crew's manager, a string guardrail's LLM) and delegates
each call to the real one, after:

- one retry layer: CrewAI's own rate-limit loop is off for the call, and the provider SDK's
  retries are off on the inner LLM (:func:`without_sdk_retries`); Temporal retries the attempt;
- the circuit breaker of the LLM's service (:mod:`activities.attempt_calls`);
- the call's outcome: a provider error ends the attempt as :class:`AttemptAborted`, which CrewAI's
  handlers cannot swallow, so the attempt boundary classifies the original exception;
- the tokens the call used, from the provider's own usage report.

Which LLM a call goes to can change per attempt (a fallback of the agent's chain): the attempt's
``llm_overrides`` say so under the boundary's ``key``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlparse

from crewai.llms.base_llm import BaseLLM, call_stop_override
from crewai.llms.retry import _active_llm_rate_limit_retry
from pydantic import ConfigDict, PrivateAttr

from activities import attempt_calls
from activities.attempt_calls import AttemptAborted, CallInfo
from activities.call_journal import NotReplayable, decode_llm, encode_llm
from activities.fingerprints import llm_fingerprint
from backend.exceptions.classifier import classify
from backend.exceptions.execution_errors import LLMOutputError
from backend.pricing import Usage

# Tokens the provider reported for the call in progress in this context (see _count_usage).
_call_usage: ContextVar[list[dict[str, Any]] | None] = ContextVar("crewrun_call_usage", default=None)


def service_of(llm: Any) -> str:
    """The external service an LLM object calls: its configured service, the host of its endpoint,
    else its provider."""
    configured = getattr(llm, "crewrun_service", None)
    if isinstance(configured, str) and configured:
        return configured
    base_url = getattr(llm, "base_url", None) or getattr(llm, "api_base", None)
    if isinstance(base_url, str) and base_url:
        host = urlparse(base_url).hostname
        if host:
            return host
    provider = getattr(llm, "provider", None)
    return provider if isinstance(provider, str) and provider else "llm"


def without_sdk_retries(llm: Any) -> Any:
    """The provider SDK clients of a native CrewAI LLM, rebuilt with ``max_retries=0`` (CrewAI
    builds them eagerly with the SDK's default of 2, and changing the field later changes nothing).
    Clients that are shared stay shared: ``with_options`` keeps the HTTP connection pool."""
    for name in ("_client", "_async_client"):
        client = getattr(llm, name, None)
        if client is not None and getattr(client, "max_retries", None) and hasattr(client, "with_options"):
            object.__setattr__(llm, name, client.with_options(max_retries=0))
    if getattr(llm, "max_retries", None):
        object.__setattr__(llm, "max_retries", 0)  # what it says it does, for anyone reading it
    return llm


class BoundaryLLM(BaseLLM):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    _inner: Any = PrivateAttr(default=None)
    _key: str = PrivateAttr(default="")

    @classmethod
    def wrap(cls, inner: Any, key: str) -> BoundaryLLM:
        """``inner`` behind the boundary; ``key`` names the slot (an agent) for per-attempt
        overrides. Wrapping a boundary again returns it unchanged."""
        if isinstance(inner, BoundaryLLM):
            return inner
        proxy = cls(
            model=getattr(inner, "model", "unknown"),
            provider=getattr(inner, "provider", None) or "openai",
            stop=list(getattr(inner, "stop", None) or []),
            temperature=getattr(inner, "temperature", None),
        )
        proxy._inner = without_sdk_retries(inner)
        proxy._key = key
        return proxy

    @property
    def inner(self) -> Any:
        return self._inner

    def _target(self) -> Any:
        calls = attempt_calls.current()
        if calls is not None and self._key in calls.llm_overrides:
            return calls.llm_overrides[self._key]
        return self._inner

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
        inner = self._target()
        calls = attempt_calls.current()
        info = CallInfo("llm", str(getattr(inner, "model", "unknown")), service_of(inner))
        journal = calls.journal if calls is not None else None
        started = time.monotonic()
        fingerprint = ""
        if calls is not None and journal is not None:
            fingerprint = llm_fingerprint(info.name, messages, tools, response_model, self.stop_sequences)
            served = journal.served("llm", fingerprint)
            if served is not None:
                # Paid for by an earlier attempt: no request, no breaker permit, no quota.
                answer = decode_llm(served.response, response_model)
                calls.record(
                    info, lambda: journal.record_replayed("llm", info.name, info.service, served, started)
                )
                return answer
        if calls is not None:
            calls.admit(info)
        with _reported_usage() as usage, _one_retry_layer():
            try:
                with call_stop_override(inner, self.stop_sequences):
                    answer = inner.call(
                        messages,
                        tools=tools,
                        callbacks=callbacks,
                        available_functions=available_functions,
                        from_task=from_task,
                        from_agent=from_agent,
                        response_model=response_model,
                    )
            except AttemptAborted:
                raise
            except Exception as exc:
                if calls is None:
                    raise
                if journal is not None:
                    code = classify(exc).code
                    calls.record(
                        info,
                        lambda: journal.record_failed(
                            "llm", info.name, info.service, fingerprint, code, started
                        ),
                    )
                raise calls.abort(exc, info) from exc
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            empty = LLMOutputError("the LLM returned an empty answer")
            if calls is None:
                raise empty
            raise calls.abort(empty, info)
        for report in usage:
            self._track_token_usage_internal(report)
        if calls is not None:
            calls.answered(info)
            if journal is not None:
                spent = sum((Usage.from_report(report) for report in usage), Usage())
                stored, provider = _encoded(answer), getattr(inner, "provider", None)
                calls.record(
                    info,
                    lambda: journal.record_live(
                        "llm",
                        info.name,
                        info.service,
                        fingerprint,
                        stored,
                        started,
                        usage=spent,
                        provider=provider,
                    ),
                )
        return answer

    # BaseLLM wraps every subclass's call in CrewAI's rate-limit retry loop unless told not to.
    call._crewai_rate_limit_wrapped = True  # type: ignore[attr-defined]

    async def acall(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        # CrewAI's summariser and converters call acall; the same checks apply, in a thread so
        # the synchronous SDK call does not block whatever loop CrewAI runs them on.
        return await asyncio.to_thread(
            self.call,
            messages,
            tools,
            callbacks,
            available_functions,
            from_task,
            from_agent,
            response_model,
        )

    acall._crewai_rate_limit_wrapped = True  # type: ignore[attr-defined]

    def supports_function_calling(self) -> bool:
        return bool(self._target().supports_function_calling())

    def supports_stop_words(self) -> bool:
        return bool(self._target().supports_stop_words())

    def get_context_window_size(self) -> int:
        return int(self._target().get_context_window_size())

    def supports_multimodal(self) -> bool:
        return bool(self._target().supports_multimodal())

    # get_input_tokens_count stays BaseLLM's estimate: OpenAI's own counts tokens with an HTTP
    # call of its own, before every LLM call, outside any breaker.


def _encoded(answer: Any) -> str | None:
    try:
        return encode_llm(answer)
    except NotReplayable:
        return None  # recorded by hash only: not served again


@contextmanager
def _one_retry_layer() -> Iterator[None]:
    """CrewAI's rate-limit loop believes a retry loop is already active: Temporal's is."""
    token = _active_llm_rate_limit_retry.set(True)
    try:
        yield
    finally:
        _active_llm_rate_limit_retry.reset(token)


@contextmanager
def _reported_usage() -> Iterator[list[dict[str, Any]]]:
    reports: list[dict[str, Any]] = []
    token = _call_usage.set(reports)
    try:
        yield reports
    finally:
        _call_usage.reset(token)


def _count_usage() -> None:
    """Every provider reports a call's usage to ``BaseLLM._track_token_usage_internal`` on the LLM
    object, whose counters are cumulative and shared by every task using that object: a before /
    after difference would mix concurrent calls. Seen from the call's own context, each report
    belongs to exactly that call."""
    original = BaseLLM._track_token_usage_internal
    if getattr(original, "_crewrun_counted", False):
        return

    def track(self: BaseLLM, usage_data: Any) -> None:
        original(self, usage_data)
        reports = _call_usage.get()
        if reports is not None and isinstance(usage_data, dict) and not isinstance(self, BoundaryLLM):
            reports.append(dict(usage_data))

    track._crewrun_counted = True  # type: ignore[attr-defined]
    track.__wrapped__ = original  # type: ignore[attr-defined]  # what it counts for (inspect.unwrap)
    BaseLLM._track_token_usage_internal = track  # type: ignore[method-assign]


_count_usage()
