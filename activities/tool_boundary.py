"""The tool boundary: every call of a user's tool goes through :func:`guard_tool`.

A tool is an external service like an LLM: it gets a circuit breaker per service (the policy's
``service``, else the tool's name), a timeout, and the same classification (``classify(...,
tool=True)``: httpx, requests and urllib errors with their status and Retry-After). What a failure
then does is the tool's policy:

- ``retry`` (the default): the attempt fails and its category decides: a 429 waits for the
  service's Retry-After and retries the task, a refused key pauses the execution, ...;
- ``tell_llm`` (the default of the categories whose trait says so: bad arguments): the agent is
  told, as CrewAI would tell it, and may correct itself; the task goes on;
- ``pause`` / ``fail``: the attempt fails for good and the execution pauses, or the task fails.

CrewAI calls a tool through ``BaseTool.run`` → ``_run`` (native function calling) or through the
structured tool's ``func`` = ``_run`` (ReAct text), and re-calls a raising tool up to six times
in the ReAct path. The guard replaces ``_run`` (``func`` for ``@tool`` tools) on the instance, once,
so both paths meet it; a failure that ends the attempt leaves as :class:`AttemptAborted`, which
CrewAI neither retries nor hands to the LLM, so one logical call is one call of the service.
"""

from __future__ import annotations

import contextvars
import functools
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import structlog
from crewai.tools.base_tool import BaseTool, Tool
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason

from activities import attempt_calls
from activities.attempt_calls import CallInfo
from activities.call_journal import NotReplayable, decode_tool, encode_tool
from activities.fingerprints import tool_fingerprint
from backend.exceptions.categories import TOOL_TELLS_LLM
from backend.exceptions.classifier import classify
from backend.exceptions.execution_errors import CrewrunError
from backend.exceptions.redaction import redact_message

log = structlog.get_logger(__name__)
Action = Literal["retry", "tell_llm", "pause", "fail"]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
DEFAULT_TIMEOUT_S = 120.0
_POLICY_ATTR = "__crewrun_policy__"


@dataclass(frozen=True)
class ToolPolicy:
    """How crewrun treats one tool. ``on_failure`` maps a category (or a failure code) to an
    action; codes win over categories, anything unlisted follows the category's default."""

    service: str | None = None
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    on_failure: Mapping[str, Action] = field(default_factory=dict)
    # Served from the call journal on a retried attempt (a tool whose answers go stale, or one
    # whose side effects must happen again, says False).
    replay: bool = True

    def action(self, category: str, code: str) -> Action:
        if code in self.on_failure:
            return self.on_failure[code]
        if category in self.on_failure:
            return self.on_failure[category]
        return "tell_llm" if category in TOOL_TELLS_LLM else "retry"

    def merged(self, override: Mapping[str, Any]) -> ToolPolicy:
        """This policy (declared in code) with the fields a deployment's settings set: settings
        win field by field, ``on_failure`` entry by entry."""
        fields = dict(override)
        fields["on_failure"] = {**self.on_failure, **dict(fields.get("on_failure") or {})}
        return replace(self, **fields)


def tool_policy(target: Any, **fields: Any) -> Any:
    """Declare a tool's policy next to its code: ``tool_policy(MyTool, service="search-api",
    timeout_s=10, on_failure={"authentication": "tell_llm"})`` on a ``BaseTool`` class, or on a
    tool instance (an ``@tool`` function). Returns ``target``."""
    policy = ToolPolicy(**fields)
    unknown = sorted(set(policy.on_failure.values()) - set(ACTIONS))
    if unknown:
        raise ValueError(f"unknown tool actions {unknown}; known: {list(ACTIONS)}")
    if isinstance(target, type):
        type.__setattr__(target, _POLICY_ATTR, policy)
    else:
        object.__setattr__(target, _POLICY_ATTR, policy)
    return target


def declared_policy(tool: Any) -> ToolPolicy:
    found = getattr(tool, _POLICY_ATTR, None)
    return found if isinstance(found, ToolPolicy) else ToolPolicy()


def tool_key(tool: Any) -> str:
    """The name crewrun knows a tool by (manifests, settings, error events): its name as an
    identifier."""
    name = str(getattr(tool, "name", "") or type(tool).__name__)
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name.strip()).strip("_")[:100] or "tool"


class ToolTimeoutError(CrewrunError):
    default_code = "TOOL_TIMEOUT"


class ToolReportedFailure(CrewrunError):
    """A tool returned a retryable ``ToolFailure``: the service may answer next time."""

    default_code = "TOOL_SERVICE_ERROR"


def guard_tool(tool: BaseTool, policy: ToolPolicy) -> BaseTool:
    """Put ``tool`` behind the boundary (idempotent). Its calls outside a task attempt pass
    through untouched."""
    attribute = "func" if isinstance(tool, Tool) else "_run"
    original = getattr(tool, attribute)
    if getattr(original, "_crewrun_guarded", False):
        return tool
    name = tool_key(tool)
    service = policy.service or name

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        calls = attempt_calls.current()
        if calls is None:
            return original(*args, **kwargs)
        call = CallInfo("tool", name, service)
        journal = calls.journal
        started = time.monotonic()
        fingerprint = tool_fingerprint(name, args, kwargs) if journal is not None else ""
        if journal is not None:
            served = journal.served("tool", fingerprint, replayable=policy.replay)
            if served is not None:  # answered for an earlier attempt: the service is not called
                calls.record(call, lambda: journal.record_replayed("tool", name, service, served, started))
                return decode_tool(served.response)
        calls.admit(call)
        try:
            result = _within(policy.timeout_s, original, args, kwargs, name)
        except Exception as exc:
            return _failed(exc, call, policy, calls, fingerprint, started)
        if isinstance(result, ToolFailure) and result.retryable:
            # The tool says the service may answer next time: a transient failure of the service.
            reported = ToolReportedFailure(f"{name} reported: {result.message} (code: {result.code})")
            return _failed(reported, call, policy, calls, fingerprint, started)
        calls.answered(call)
        if journal is not None:
            stored = _encoded(result)
            calls.record(
                call, lambda: journal.record_live("tool", name, service, fingerprint, stored, started)
            )
        return result

    guarded._crewrun_guarded = True  # type: ignore[attr-defined]
    guarded._crewrun_service = service  # type: ignore[attr-defined]
    object.__setattr__(tool, attribute, guarded)
    return tool


def service_name(tool: Any) -> str | None:
    """The service a guarded tool's breaker answers for."""
    for attribute in ("func", "_run"):
        service = getattr(getattr(tool, attribute, None), "_crewrun_service", None)
        if isinstance(service, str):
            return service
    return None


def _encoded(result: Any) -> str | None:
    try:
        return encode_tool(result)
    except NotReplayable:
        return None  # recorded by hash only: not served again


def _failed(
    exc: Exception,
    call: CallInfo,
    policy: ToolPolicy,
    calls: attempt_calls.AttemptCalls,
    fingerprint: str,
    started: float,
) -> Any:
    found = classify(exc, tool=True)
    action = policy.action(found.category, found.code)
    journal = calls.journal
    if journal is not None:  # a failed call is recorded, and never served again
        calls.record(
            call,
            lambda: journal.record_failed("tool", call.name, call.service, fingerprint, found.code, started),
        )
    if action == "tell_llm":
        # What CrewAI itself would hand the agent, as a failure it records (never cached); the
        # service answered, so its breaker counts a success.
        calls.counts.tool_errors_told += 1
        calls.answered(call)
        message = redact_message(f"Error executing tool: {exc}")
        log.info("tool.error_told_to_llm", tool=call.name, code=found.code)
        return ToolFailure(message=message, reason=ToolFailureReason.EXCEPTION, code=found.code)
    forced: Literal["pause", "fail"] | None = action if action in ("pause", "fail") else None  # type: ignore[assignment]
    raise calls.abort(exc, replace(call, action=forced)) from exc


def _within(
    timeout_s: float | None, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str
) -> Any:
    """Call ``fn`` and give up waiting after ``timeout_s``. A thread cannot be stopped: one that
    overruns finishes in the background and its result is dropped."""
    if not timeout_s:
        return fn(*args, **kwargs)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread as it is
            outcome["error"] = exc

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name=f"tool-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ToolTimeoutError(f"tool {name} did not answer within {timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
