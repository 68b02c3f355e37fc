"""Fault script of the LLM simulator: which agent gets which failure, and how often.

The simulator is a test and demo tool. A *rule* says "the next N calls of agent X get fault K";
rules are consumed in order, so ``[429 x2, then healthy]`` is two rules' worth of state at most.
An *outage* is a time window during which every call (of every agent, or of one) gets a 503.

The simulator also serves tools (``POST /tools/{name}``). A rule or outage with ``tool`` set (a tool
name or ``"*"``) applies to tool-service calls of that tool only; one without ``tool`` applies to
LLM calls only, so scripting a tool's failure never disturbs the model and vice versa.

*Agent settings* script how an agent uses tools: how many tool rounds it makes before its final
answer, which tool it calls, and how many of its first tool calls carry invalid arguments.

Every call is recorded (kind "llm" or "tool", agent or tool, what was answered, and for LLM calls
the prompt) so tests can count provider and tool calls from the simulator's own log instead of
trusting the client's.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

FaultKind = Literal[
    "rate_limit",  # 429 with Retry-After / retry-after-ms
    "server_error",  # 5xx (status configurable, default 503)
    "slow",  # answers correctly after delay_s
    "timeout",  # sleeps delay_s (default 120) before answering: the client should time out
    "reset",  # drops the connection without a response
    "malformed",  # 200 with a body that is not JSON
    "auth",  # 401 invalid_api_key
    "quota",  # 429 insufficient_quota
    "context_length",  # 400 context_length_exceeded
    "content_policy",  # 400 content_filter
    "huge",  # 200 with an answer of size_mb megabytes: runs a worker with a memory limit out of memory
    "bad_request",  # 400: the request (LLM) or the tool's arguments (tool service) are invalid
]

FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]
# The kinds a tool service can show; the others only make sense for a model.
TOOL_FAULT_KINDS: tuple[str, ...] = (
    "rate_limit",
    "server_error",
    "slow",
    "timeout",
    "reset",
    "malformed",
    "auth",
    "quota",  # 429 by default; status 402 for a "payment required" style service
    "bad_request",
)


@dataclass
class FaultRule:
    kind: FaultKind
    agent: str = "*"
    count: int | None = 1  # None: forever (until cleared)
    probability: float = 1.0  # <1.0: a seeded coin decides per matching call
    status: int | None = None
    retry_after_s: float | None = None
    delay_s: float | None = None
    size_mb: float | None = None  # "huge": the answer's size (default 64 MB)
    message: str | None = None
    tool: str | None = None  # a tool name or "*": applies to tool-service calls only (agent ignored)
    # Only tool-service calls whose arguments (canonical JSON) contain this text: one
    # execution's calls, when several executions use the same tool at once.
    args_contain: str | None = None
    # Let this many matching calls through first: "the 4th call of the agent fails".
    after: int = 0

    def matches(self, agent: str) -> bool:
        """Does this rule apply to an LLM call of ``agent``?"""
        return self.tool is None and self.agent in ("*", agent)

    def matches_tool(self, tool: str, args: str = "") -> bool:
        """Does this rule apply to a tool-service call of ``tool`` with these arguments?"""
        return self.tool in ("*", tool) and (self.args_contain is None or self.args_contain in args)

    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0


@dataclass
class Outage:
    until: float  # monotonic deadline
    agent: str = "*"
    tool: str | None = None  # set: an outage of the tool service (that tool, or "*"), not of the LLM

    def covers_llm(self, agent: str) -> bool:
        return self.tool is None and self.agent in ("*", agent)

    def covers_tool(self, tool: str) -> bool:
        return self.tool in ("*", tool)


@dataclass
class AgentSettings:
    """How an agent uses tools when the model is offered some (natively or in the ReAct prompt)."""

    tool_rounds: int = 1  # tool calls with valid arguments before the final answer
    tool: str | None = None  # the tool to call; None: the first one offered
    bad_arguments: int = 0  # the agent's first K tool calls carry arguments that do not validate
    bad_arguments_left: int = field(init=False, default=0)  # consumed as those calls are made

    def __post_init__(self) -> None:
        if self.tool_rounds < 0 or self.bad_arguments < 0:
            raise ValueError("tool_rounds and bad_arguments must not be negative")
        self.bad_arguments_left = self.bad_arguments


@dataclass
class RecordedCall:
    seq: int
    agent: str  # "" for tool-service calls
    task_hint: str
    outcome: str  # "ok" or the fault kind
    status: int
    at: float
    kind: str = "llm"  # "llm" or "tool"
    tool: str | None = None  # tool-service calls: the tool's name
    args: str | None = None  # tool-service calls: the arguments as canonical JSON
    prompt: str = ""  # LLM calls: "role: content" lines of the messages, bounded
    has_tools: bool = False  # LLM calls: the request offered native tools
    # LLM calls: the usage the answer reported (set once answered; None for a fault)
    usage: dict[str, int] | None = None


@dataclass
class FaultScript:
    """Thread-safe fault state; the clock and the coin are injectable for tests."""

    clock: Callable[[], float] = time.monotonic
    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    calls: list[RecordedCall] = field(default_factory=list)
    agents: dict[str, AgentSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    def add_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self.rules.extend(rules)

    def start_outage(self, duration_s: float, agent: str = "*", tool: str | None = None) -> None:
        with self._lock:
            self.outages.append(Outage(until=self.clock() + duration_s, agent=agent, tool=tool))

    def heal(self) -> None:
        """Clear every rule, outage and agent setting: the provider and its tools behave again."""
        with self._lock:
            self.rules.clear()
            self.outages.clear()
            self.agents.clear()

    def set_agent(self, agent: str, settings: AgentSettings) -> None:
        with self._lock:
            self.agents[agent] = settings

    def agent_settings(self, agent: str) -> AgentSettings:
        """A copy, so a reader never sees the counter move under it."""
        with self._lock:
            found = self.agents.get(agent)
            return copy.copy(found) if found else AgentSettings()

    def take_bad_arguments(self, agent: str) -> bool:
        """Should this tool call of ``agent`` carry invalid arguments? Consumes one if so."""
        with self._lock:
            settings = self.agents.get(agent)
            if settings is None or settings.bad_arguments_left <= 0:
                return False
            settings.bad_arguments_left -= 1
            return True

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def next_fault(self, agent: str) -> FaultRule | None:
        """Pick (and consume) the fault for this LLM call, or None for a healthy answer."""
        return self._pick(lambda o: o.covers_llm(agent), lambda r: r.matches(agent))

    def next_tool_fault(self, tool: str, args: str = "") -> FaultRule | None:
        """Pick (and consume) the fault for this tool-service call, or None for a healthy answer."""
        return self._pick(lambda o: o.covers_tool(tool), lambda r: r.matches_tool(tool, args))

    def _pick(
        self, in_outage: Callable[[Outage], bool], applies: Callable[[FaultRule], bool]
    ) -> FaultRule | None:
        with self._lock:
            now = self.clock()
            self.outages = [o for o in self.outages if o.until > now]
            if any(in_outage(o) for o in self.outages):
                return FaultRule(kind="server_error", status=503, message="service outage")
            for rule in self.rules:
                # The coin is tossed only for rules that apply, so one kind of call never shifts
                # the seeded sequence of the other.
                if rule.exhausted() or not applies(rule):
                    continue
                if rule.after > 0:
                    rule.after -= 1
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                return rule
            self.rules = [r for r in self.rules if not r.exhausted()]
            return None

    def record(
        self,
        agent: str,
        task_hint: str,
        outcome: str,
        status: int,
        prompt: str = "",
        has_tools: bool = False,
    ) -> RecordedCall:
        """Record an LLM call (its usage is set once it is answered)."""
        call = RecordedCall(
            0, agent, task_hint, outcome, status, time.time(), prompt=prompt, has_tools=has_tools
        )
        with self._lock:
            call.seq = len(self.calls) + 1
            self.calls.append(call)
        return call

    def record_tool(self, tool: str, args: str, outcome: str, status: int) -> None:
        """Record a tool-service call; ``args`` is the canonical JSON of its arguments."""
        with self._lock:
            self.calls.append(
                RecordedCall(
                    len(self.calls) + 1,
                    "",
                    "",
                    outcome,
                    status,
                    time.time(),
                    kind="tool",
                    tool=tool,
                    args=args,
                )
            )

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            now = self.clock()
            return {
                "rules": [asdict(r) for r in self.rules if not r.exhausted()],
                "outages": [_outage_dict(o, now) for o in self.outages if o.until > now],
                "calls": len(self.calls),
            }

    def calls_as_dicts(
        self, agent: str | None = None, tool: str | None = None, kind: str | None = None
    ) -> list[dict[str, object]]:
        """The log, oldest first. ``agent`` selects LLM calls of that agent, ``tool`` tool-service
        calls of that tool ("*": every tool call), ``kind`` "llm" or "tool"; filters combine."""
        with self._lock:
            return [asdict(c) for c in self.calls if _selected(c, agent, tool, kind)]


def _selected(call: RecordedCall, agent: str | None, tool: str | None, kind: str | None) -> bool:
    if kind is not None and call.kind != kind:
        return False
    if agent is not None and (call.kind != "llm" or call.agent != agent):
        return False
    return tool is None or (call.kind == "tool" and tool in ("*", call.tool))


def _outage_dict(outage: Outage, now: float) -> dict[str, object]:
    remaining = round(outage.until - now, 3)
    if outage.tool is not None:
        return {"tool": outage.tool, "remaining_s": remaining}
    return {"agent": outage.agent, "remaining_s": remaining}
