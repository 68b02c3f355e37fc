"""Runs one crew task with a real CrewAI agent. The only module that imports crewai.

CrewAI is synchronous: the activity calls :meth:`CrewAITaskRunner.run` in a thread. Temporal owns
retries, so every retry layer under it is turned off: the agent's ``max_retry_limit``, the provider
SDK's ``max_retries`` and CrewAI's own rate-limit loop (which would retry every 429 about three times,
ignoring Retry-After, and hide those calls from history).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict

# Before crewai is imported: no telemetry, no version check.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import LLM, Agent, Task  # noqa: E402
from crewai.llms.retry import _active_llm_rate_limit_retry  # noqa: E402
from crewai_core.printer import set_suppress_console_output  # noqa: E402

from activities.runner_contract import TaskRunOutcome, TaskRunRequest  # noqa: E402
from backend.exceptions.execution_errors import ConfigurationError, ContextLengthError, LLMOutputError  # noqa: E402
from backend.exceptions.redaction import add_secrets  # noqa: E402
from backend.settings import resolve_secret  # noqa: E402
from backend.specs import interpolate  # noqa: E402

# The OpenAI SDK refuses to build a client without a key; keyless endpoints (the simulator, local
# model servers) get this stand-in.
_NO_KEY = "no-key-configured"
LLM_CACHE_SIZE = 32

LLMKey = tuple[str, str | None, str, float, float | None]


class LLMCache:
    """One ``crewai.LLM`` per (model, base_url, key, timeout, temperature), shared by the tasks of
    this worker. Building one builds an OpenAI and an AsyncOpenAI client, each loading the CA
    bundle into a new SSL context: about 60 ms of CPU, most of a task's own cost on a fast
    provider. CrewAI keeps per-call state (stop words, streaming) in context variables, never on
    the instance, so concurrent tasks can share one. An evicted LLM's clients are closed at once
    (see :func:`close_clients`) by the thread evicting it."""

    def __init__(self, size: int = LLM_CACHE_SIZE) -> None:
        self._size = size
        self._llms: OrderedDict[LLMKey, LLM] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: LLMKey) -> LLM:
        with self._lock:
            if key in self._llms:
                self._llms.move_to_end(key)
                return self._llms[key]
        model, base_url, api_key, timeout, temperature = key
        llm = LLM(
            model=model,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=0,
            temperature=temperature,
        )
        evicted: list[LLM] = []
        with self._lock:
            llm = self._llms.setdefault(key, llm)
            while len(self._llms) > self._size:
                evicted.append(self._llms.popitem(last=False)[1])
        for old in evicted:
            close_clients(old)
        return llm

    def clear(self) -> None:
        with self._lock:
            llms, self._llms = list(self._llms.values()), OrderedDict()
        for llm in llms:
            close_clients(llm)


class CrewAITaskRunner:
    def __init__(self, llms: LLMCache | None = None) -> None:
        self._llms = llms or LLMCache()

    def close(self) -> None:
        """When the worker stops: close every cached LLM's provider clients."""
        self._llms.clear()

    def run(self, request: TaskRunRequest) -> TaskRunOutcome:
        # Both are context variables of this thread: they do not leak into other tasks.
        set_suppress_console_output(True)
        _active_llm_rate_limit_retry.set(True)  # "a retry loop is already active": CrewAI's is off
        llm_spec = request.agent.llm
        api_key = resolve_secret(llm_spec.api_key_env)
        if llm_spec.api_key_env and not api_key:
            raise ConfigurationError(
                f"environment variable {llm_spec.api_key_env} is not set", code="CONFIG_SECRET_MISSING"
            )
        if api_key:
            add_secrets([api_key])  # whatever its variable is called, it never leaves redacted text
        key = (
            llm_spec.model,
            llm_spec.base_url,
            api_key or _NO_KEY,
            llm_spec.timeout_s,
            llm_spec.temperature,
        )
        llm = self._llms.get(key)
        agent = Agent(
            role=interpolate(request.agent.role, request.inputs),
            goal=interpolate(request.agent.goal, request.inputs),
            backstory=interpolate(request.agent.backstory, request.inputs),
            llm=llm,
            max_retry_limit=0,
            allow_delegation=False,
            verbose=False,
            # Summarising on overflow would turn a context-length error into a "completed" task
            # with no real output; fail instead, so it is classified (see run()).
            respect_context_window=False,
            memory=False,
        )
        task = Task(
            name=request.task.name,
            description=interpolate(request.task.description, request.inputs),
            expected_output=interpolate(request.task.expected_output, request.inputs),
            agent=agent,
        )
        context = "\n\n----------\n\n".join(
            f"Output of task {name}:\n{output}" for name, output in request.context.items()
        )
        try:
            result = task.execute_sync(agent=agent, context=context or None)
        except SystemExit as exc:
            # CrewAI ends a context-length overflow with SystemExit (respect_context_window=False);
            # the provider's error is its __context__, kept as the cause for classification.
            raise ContextLengthError(str(exc)) from (exc.__context__ or exc.__cause__)
        output = str(result.raw)
        if not output.strip():
            raise LLMOutputError("the agent returned an empty answer")
        return TaskRunOutcome(output=output, model=llm_spec.model)


def close_clients(llm: object) -> None:
    """Close the provider SDK clients CrewAI built for an LLM leaving the cache (every native
    provider keeps them in ``_client`` and ``_async_client``; both are built eagerly, the async
    one is never used here).

    Left to the garbage collector, the async clients of openai and anthropic close themselves with
    ``asyncio.get_running_loop().create_task(self.aclose())`` in ``__del__``, on whichever thread
    happens to collect them. When that thread is running a workflow activation, the task lands in
    the workflow's sandboxed event loop and imports modules there: CI saw Temporal's deadlock
    detector fire (TMPRL1101) and the workflow task never complete again. A closed client's
    ``__del__`` does nothing. This runs in the activity's own thread, where no loop is running;
    an LLM still in the cache is referenced, so the collector never meets its clients.
    """
    close = getattr(getattr(llm, "_client", None), "close", None)
    if callable(close):
        close()
    aclose = getattr(getattr(llm, "_async_client", None), "close", None)
    if callable(aclose):
        asyncio.run(aclose())
