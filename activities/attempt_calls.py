"""What the external calls of one task attempt share, and how a boundary ends the attempt.

The LLM and tool boundaries are installed once on long-lived CrewAI objects (a worker builds each
crew once and copies it per attempt; tools are shared by reference). Per call they look up the
attempt they serve in a context variable: CrewAI copies the context into every thread it starts
(its flow steps, parallel tool calls, delegated coworkers), so the lookup finds the right attempt
wherever the call runs. Outside an attempt (a worker building a crew's manifest) calls pass through.

:class:`AttemptAborted` is how a boundary fails the attempt from deep inside CrewAI. It is a
``BaseException``: CrewAI's ``except Exception`` handlers hand tool errors back to the LLM, re-run
``execute_task`` and summarise on context-length messages; none of that may happen to a failure
crewrun's policy says ends the attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from activities.call_journal import AttemptJournal
from backend.breaker import CircuitBreaker, Permit
from backend.exceptions.execution_errors import CircuitOpenError

CallKind = Literal["llm", "tool"]


@dataclass(frozen=True)
class CallInfo:
    """One external call: what it called and which service's breaker answers for it."""

    kind: CallKind
    name: str  # the model, or the tool
    service: str
    # What the tool's policy says to do when this call failed for good: pause the execution or
    # fail the task instead of what the category would do (None: the category decides).
    action: Literal["pause", "fail"] | None = None


class AttemptAborted(BaseException):  # noqa: N818 (not an error of its own: it carries one)
    """A boundary ended the attempt: ``error`` is what failed, ``call`` where."""

    def __init__(self, error: BaseException, call: CallInfo) -> None:
        super().__init__(f"{call.kind} {call.name} ({call.service}): {type(error).__name__}")
        self.error = error
        self.call = call


class CallFailed(Exception):
    """An attempt's end, as the runner hands it to the attempt boundary: the failed call's
    exception is the cause (classification walks to it), ``call`` says which call it was."""

    def __init__(self, aborted: AttemptAborted) -> None:
        super().__init__(str(aborted))
        self.call = aborted.call
        self.__cause__ = aborted.error


@dataclass
class CallCounts:
    llm_calls: int = 0
    tool_calls: int = 0
    tool_errors_told: int = 0  # tool failures handed back to the LLM (e.g. bad arguments)


@dataclass
class AttemptCalls:
    """The attempt's breaker permits (one per service: the first call to a service decides for the
    attempt, later ones reuse it) and, once it ends, which services answered and which failed."""

    breaker: CircuitBreaker | None = None
    # The LLM each agent's boundary calls in this attempt, when it is not the agent's own (a
    # fallback LLM of the chain): agent key -> LLM object.
    llm_overrides: dict[str, Any] = field(default_factory=dict)
    counts: CallCounts = field(default_factory=CallCounts)
    aborted: AttemptAborted | None = None
    # The attempt's call journal (None: nothing is recorded or replayed, e.g. outside a worker).
    journal: AttemptJournal | None = None
    _permits: dict[str, Permit] = field(default_factory=dict)
    _answered: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, permit: Permit) -> None:
        """A permit the attempt's first transaction acquired (the task agent's LLM)."""
        self._permits[permit.service] = permit

    def admit(self, call: CallInfo) -> None:
        """Raises AttemptAborted(CircuitOpenError) when the service's breaker refuses the call."""
        with self._lock:
            if call.kind == "llm":
                self.counts.llm_calls += 1
            else:
                self.counts.tool_calls += 1
            if self.breaker is None or not self.breaker.config.enabled or call.service in self._permits:
                return
        try:
            permit = self.breaker.acquire(call.service)
        except CircuitOpenError as refused:
            raise self.abort(refused, call) from None
        with self._lock:
            self._permits.setdefault(call.service, permit)

    def answered(self, call: CallInfo) -> None:
        with self._lock:
            self._answered.add(call.service)

    def abort(self, error: BaseException, call: CallInfo) -> AttemptAborted:
        """The exception that ends the attempt; the first one wins (parallel tool calls may fail
        together, the attempt reports one)."""
        aborted = AttemptAborted(error, call)
        with self._lock:
            if self.aborted is None:
                self.aborted = aborted
        return aborted

    def record(self, call: CallInfo, write: Callable[[], None]) -> None:
        """A journal write for ``call``. One that fails (the database is down or full) ends the
        attempt as a failed call would: an answer is not used unless it is recorded."""
        try:
            write()
        except Exception as exc:
            raise self.abort(exc, call) from exc

    def outcomes(
        self, failed: CallInfo | None = None, category: str | None = None
    ) -> list[tuple[Permit, str | None]]:
        """What the breaker records for this attempt: one success per service that answered, and
        the failure of the call that ended it."""
        with self._lock:
            permits = dict(self._permits)
            answered = set(self._answered)
        found: list[tuple[Permit, str | None]] = []
        for service, permit in permits.items():
            if failed is not None and service == failed.service:
                found.append((permit, category))
            elif service in answered:
                found.append((permit, None))
        return found


_current: ContextVar[AttemptCalls | None] = ContextVar("crewrun_attempt_calls", default=None)


def current() -> AttemptCalls | None:
    return _current.get()


@contextmanager
def serving(calls: AttemptCalls) -> Iterator[AttemptCalls]:
    """Make ``calls`` the attempt every boundary in this context (and its threads) serves."""
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)
