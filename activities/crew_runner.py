"""Runs one crew task with real CrewAI objects. With the boundary modules, the only place that
imports crewai.

Two kinds of crews, one way to run a task: a JSON spec's agent and task are built here from the
spec (their LLMs shared through :class:`LLMCache`, their tools from the worker's registry); a
Python crew's are the user's own (:mod:`activities.python_crews`). Either way the task runs with
``Task.execute_sync`` in the activity's thread, every LLM call behind the LLM boundary and every
tool call behind the tool boundary, serving this attempt's :class:`AttemptCalls`.

CrewAI is synchronous: the activity calls :meth:`CrewTaskRunner.run` in a thread. Temporal owns
retries, so every retry layer under it is off: the agent's ``max_retry_limit``, the provider SDK's
``max_retries`` and CrewAI's own rate-limit loop (which would retry every 429 about three times,
ignoring Retry-After, and hide those calls from history).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from typing import Any

# Before crewai is imported: no telemetry, no version check.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import LLM, Agent, Task  # noqa: E402
from crewai.llms.retry import _active_llm_rate_limit_retry  # noqa: E402
from crewai_core.printer import set_suppress_console_output  # noqa: E402

from activities import attempt_calls  # noqa: E402
from activities.attempt_calls import AttemptAborted, CallFailed  # noqa: E402
from activities.llm_boundary import BoundaryLLM  # noqa: E402
from activities.python_crews import CrewRegistry, PreparedTask, guard, prepare, resolve  # noqa: E402
from activities.runner_contract import Feedback, TaskRunOutcome, TaskRunRequest  # noqa: E402
from activities.task_outputs import stored  # noqa: E402
from activities.tool_boundary import service_name, tool_key  # noqa: E402
from backend.exceptions.execution_errors import ConfigurationError, ContextLengthError  # noqa: E402
from backend.exceptions.redaction import add_secrets  # noqa: E402
from backend.settings import ToolSetting, resolve_secret  # noqa: E402
from backend.specs import LLMSpec, interpolate  # noqa: E402

# The OpenAI SDK refuses to build a client without a key; keyless endpoints (the simulator, local
# model servers) get this stand-in.
_NO_KEY = "no-key-configured"
LLM_CACHE_SIZE = 32

LLMKey = tuple[str, str | None, str, float, float | None, str | None]


class LLMCache:
    """One ``crewai.LLM`` per (model, base_url, key, timeout, temperature, service), shared by the tasks of
    this worker, behind the LLM boundary. Building one builds an OpenAI and an AsyncOpenAI client,
    each loading the CA bundle into a new SSL context: about 60 ms of CPU, most of a task's own
    cost on a fast provider. CrewAI keeps per-call state (stop words, streaming) in context
    variables, never on the instance, so concurrent tasks can share one. An evicted LLM's clients
    are closed at once (see :func:`close_clients`) by the thread evicting it."""

    def __init__(self, size: int = LLM_CACHE_SIZE) -> None:
        self._size = size
        self._llms: OrderedDict[LLMKey, BoundaryLLM] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: LLMKey) -> BoundaryLLM:
        with self._lock:
            if key in self._llms:
                self._llms.move_to_end(key)
                return self._llms[key]
        model, base_url, api_key, timeout, temperature, service = key
        built = LLM(
            model=model,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=0,
            temperature=temperature,
        )
        if service:
            object.__setattr__(built, "crewrun_service", service)  # its breaker's name
        llm = BoundaryLLM.wrap(built, key="")
        evicted: list[BoundaryLLM] = []
        with self._lock:
            llm = self._llms.setdefault(key, llm)
            while len(self._llms) > self._size:
                evicted.append(self._llms.popitem(last=False)[1])
        for old in evicted:
            close_clients(old.inner)
        return llm

    def for_spec(self, spec: LLMSpec) -> BoundaryLLM:
        """The LLM an LLMSpec describes (its key from the worker's environment)."""
        api_key = resolve_secret(spec.api_key_env)
        if spec.api_key_env and not api_key:
            raise ConfigurationError(
                f"environment variable {spec.api_key_env} is not set", code="CONFIG_SECRET_MISSING"
            )
        if api_key:
            add_secrets([api_key])  # whatever its variable is called, it never leaves redacted text
        key = (spec.model, spec.base_url, api_key or _NO_KEY, spec.timeout_s, spec.temperature, spec.service)
        return self.get(key)

    def clear(self) -> None:
        with self._lock:
            llms, self._llms = list(self._llms.values()), OrderedDict()
        for llm in llms:
            close_clients(llm.inner)


class ToolRegistry:
    """The tools JSON specs may name: built once per worker from ``CREWRUN_TOOLS`` entries with a
    ``ref`` (a BaseTool instance, a class built without arguments, or a factory), guarded with
    their policies."""

    def __init__(self, tools: dict[str, Any]) -> None:
        self.tools = tools

    @classmethod
    def load(cls, settings: dict[str, ToolSetting]) -> ToolRegistry:
        tools: dict[str, Any] = {}
        for name, setting in settings.items():
            if setting.ref is None:
                continue
            target = resolve(setting.ref)
            tool = target if hasattr(target, "run") and not isinstance(target, type) else target()
            # The registry's name for it decides its policy, whatever the tool calls itself.
            tools[name] = guard(tool, {tool_key(tool): setting})
        return cls(tools)

    def named(self, names: list[str]) -> list[Any]:
        missing = [n for n in names if n not in self.tools]
        if missing:
            raise ConfigurationError(
                f"no tool {missing[0]!r} in this worker's registry", code="CONFIG_TOOL_UNKNOWN"
            )
        return [self.tools[n] for n in names]

    def described(self) -> list[tuple[str, str, str]]:
        """(name, service, description) of each tool, for the API's validation of JSON specs."""
        return [
            (name, service_name(tool) or name, str(getattr(tool, "description", ""))[:2000])
            for name, tool in self.tools.items()
        ]


class CrewTaskRunner:
    def __init__(
        self,
        llms: LLMCache | None = None,
        crews: CrewRegistry | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        self._llms = llms or LLMCache()
        self.crews = crews or CrewRegistry({}, {})
        self.tools = tools or ToolRegistry({})

    def close(self) -> None:
        """When the worker stops: close the provider clients of every LLM it holds (the cached
        ones, and those of the Python crews it built)."""
        self._llms.clear()
        for llm in self.crews.llms():
            close_clients(llm)

    def run(self, request: TaskRunRequest) -> TaskRunOutcome:
        # Both are context variables of this thread: they do not leak into other tasks.
        set_suppress_console_output(True)
        _active_llm_rate_limit_retry.set(True)  # "a retry loop is already active": CrewAI's is off
        if request.source == "python":
            prepared = prepare(self.crews.get(request.crew_name), request, self._llms.for_spec)
        else:
            prepared = self._spec_task(request)
        if request.feedback:
            prepared.context = _with_feedback(prepared.context, request.feedback)
        with attempt_calls.serving(request.calls):
            try:
                output = prepared.task.execute_sync(
                    agent=prepared.agent, context=prepared.context or None, tools=prepared.tools
                )
            except AttemptAborted as aborted:
                raise CallFailed(aborted)  # noqa: B904 (CallFailed names its cause itself)
            except SystemExit as exc:
                # CrewAI ends a context-length overflow with SystemExit (respect_context_window=False);
                # the provider's error is its __context__, kept as the cause for classification.
                raise ContextLengthError(str(exc)) from (exc.__context__ or exc.__cause__)
        if request.calls.aborted is not None:
            # A call failed for good but something in CrewAI carried on (a handler that catches
            # BaseException): the attempt still fails with that call's error.
            raise CallFailed(request.calls.aborted)
        saved = stored(output)
        return TaskRunOutcome(saved.raw, prepared.model, saved.json_dict, saved.format, prepared.output_file)

    def _spec_task(self, request: TaskRunRequest) -> PreparedTask:
        """A JSON spec's agent and task, built from the spec (inputs filled in with crewrun's own
        template rules: nothing is evaluated)."""
        spec = request.agent.llm
        llm = self._llms.for_spec(spec)
        agent = Agent(
            role=interpolate(request.agent.role, request.inputs),
            goal=interpolate(request.agent.goal, request.inputs),
            backstory=interpolate(request.agent.backstory, request.inputs),
            llm=llm,
            tools=self.tools.named(request.agent.tools),
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
            tools=self.tools.named(request.task.tools),
        )
        context = "\n\n----------\n\n".join(
            f"Output of task {name}:\n{output.raw}" for name, output in request.context.items()
        )
        output_file = (
            interpolate(request.task.output_file, request.inputs) if request.task.output_file else None
        )
        return PreparedTask(
            task, agent, context, list(task.tools or agent.tools or []), spec.model, output_file
        )


def _with_feedback(context: str, feedback: list[Feedback]) -> str:
    """A rejected output and what the person said, in the words CrewAI's own human-input loop
    uses, for the task's next run."""
    rounds = [
        f"Your previous answer:\n{item.output}\n\nUser feedback: {item.feedback}\n"
        "Instructions: Use this feedback to enhance the next output iteration.\n"
        "Note: Do not respond or add commentary."
        for item in feedback
    ]
    return "\n\n----------\n\n".join(part for part in (context, *rounds) if part)


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
