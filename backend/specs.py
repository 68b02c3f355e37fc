"""CrewSpec: a crew in CrewAI's vocabulary, validated before anything runs.

Two sources, one shape. A client submits a JSON spec (``source: spec``); a worker registers the
manifest of a crew written in Python (``source: python``: its agents, tasks in order, process,
tools, the ``{placeholders}`` it needs, output types and code version, read off the user's own
objects). The workflow runs both the same way, one activity per task.

A spec that passes here can be run: every task names a known agent, ``context`` references only
earlier-declared tasks and has no cycles, and :func:`missing_inputs` tells which ``{placeholders}``
an execution must supply. Secrets never travel in a spec: ``api_key_env`` names an environment
variable of the worker.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from backend.exceptions.retry_policy import OVERRIDABLE

# Names of crews, agents and tasks (the API's crew_name filter takes the same).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
_RETRY_CATEGORIES = tuple(sorted(OVERRIDABLE))


MAX_DEPTH = 32


def check_storable(value: Any, depth: int = 0) -> Any:
    """Refuse what the database cannot store or a human would never send: NUL characters in text
    (PostgreSQL rejects them) and absurdly deep nesting. Returns the value unchanged."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, depth + 1)
            check_storable(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_storable(item, depth + 1)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return check_storable(data)


class LLMSpec(_Strict):
    model: str = Field(min_length=1, max_length=200)
    base_url: str | None = Field(default=None, max_length=2000)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    service: str | None = Field(default=None, max_length=100)
    temperature: float | None = Field(default=None, ge=0, le=2)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("base_url must be an http(s) URL with a host")
        if parsed.username or parsed.password or parsed.query:
            raise ValueError("base_url must not carry credentials or a query string")
        return value

    @property
    def service_name(self) -> str:
        """The external dependency this LLM counts against (circuit breaker, metrics)."""
        if self.service:
            return self.service
        if self.base_url:
            return urlparse(self.base_url).hostname or "llm"
        return "openai"


class LLMOverride(_Strict):
    """Fields of an agent's LLM to change when resuming a paused execution."""

    model: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: str | None = Field(default=None, max_length=2000)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    service: str | None = Field(default=None, max_length=100)

    _url = field_validator("base_url")(LLMSpec._http_url.__func__)  # type: ignore[attr-defined]


class RetryOverride(_Strict):
    maximum_attempts: int | None = Field(default=None, ge=1, le=100)
    initial_interval_s: float | None = Field(default=None, gt=0, le=3600)
    backoff: float | None = Field(default=None, ge=1, le=10)
    maximum_interval_s: float | None = Field(default=None, gt=0, le=86400)


RetrySpec = dict[str, RetryOverride]


def _check_retry_categories(value: RetrySpec) -> RetrySpec:
    unknown = sorted(set(value) - set(_RETRY_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown retry categories {unknown}; known: {list(_RETRY_CATEGORIES)}")
    return value


class AgentSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    role: str = Field(min_length=1, max_length=500)
    goal: str = Field(min_length=1, max_length=5000)
    backstory: str = Field(default="", max_length=20000)
    llm: LLMSpec
    fallback_llms: list[LLMSpec] = Field(default_factory=list, max_length=5)
    # Tools by name: for a JSON spec, names of the worker's tool registry (CREWRUN_TOOLS); for a
    # Python crew, the tools its code gives the agent (a description).
    tools: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list, max_length=50)

    @property
    def chain(self) -> list[LLMSpec]:
        """The agent's LLM, then its fallbacks in order."""
        return [self.llm, *self.fallback_llms]


class TaskSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1, max_length=20000)
    expected_output: str = Field(min_length=1, max_length=5000)
    agent: str
    # None: every earlier task (CrewAI's sequential default); []: no context.
    context: list[str] | None = None
    critical: bool = True
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    retry: RetrySpec = Field(default_factory=dict)
    # Runs concurrently with the async tasks next to it; the next synchronous task waits for all.
    async_execution: bool = False
    # A person approves the output (or rejects it with feedback: the task runs again) before the
    # crew goes on; the execution waits in awaiting_feedback.
    human_input: bool = False
    # Written under the execution's directory of the worker's data dir, by the attempt that
    # completes the task ({placeholders} allowed).
    output_file: str | None = Field(default=None, max_length=500, pattern=r"^[^~$|<>&;]*$")
    output_format: Literal["raw", "json", "pydantic"] = "raw"
    tools: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list, max_length=50)

    _retry_categories = field_validator("retry")(_check_retry_categories)

    @field_validator("output_file")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError("output_file must be a relative path inside the execution's directory")
        return value


class CrewSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    source: Literal["spec", "python"] = "spec"
    process: Literal["sequential", "hierarchical"] = "sequential"
    agents: list[AgentSpec] = Field(min_length=1, max_length=50)
    tasks: list[TaskSpec] = Field(min_length=1, max_length=100)
    retry: RetrySpec = Field(default_factory=dict)
    # A retried task may be served from the calls its earlier attempts recorded (the call journal).
    replay: bool = True
    # A Python crew: where the worker finds it ("module:attr") and a digest of its code.
    reference: str | None = Field(default=None, max_length=300)
    code_version: str | None = Field(default=None, max_length=64)

    _retry_categories = field_validator("retry")(_check_retry_categories)

    @model_validator(mode="after")
    def _references(self) -> CrewSpec:
        problems = reference_problems(self) + source_problems(self)
        if problems:
            # One error whose ctx lists each problem with its own location, so the API can report
            # them as field errors ("tasks.1.agent") instead of one opaque string.
            raise PydanticCustomError(
                "crew_spec_reference",
                "{summary}",
                {
                    "summary": "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems),
                    "problems": [{"loc": list(loc), "msg": msg} for loc, msg in problems],
                },
            )
        return self

    def agent(self, name: str) -> AgentSpec:
        return next(a for a in self.agents if a.name == name)

    def context_of(self, task: TaskSpec) -> list[str]:
        """The tasks whose outputs a task sees (default: all earlier ones)."""
        if task.context is not None:
            return list(task.context)
        names = [t.name for t in self.tasks]
        return names[: names.index(task.name)]

    def placeholders(self) -> set[str]:
        found: set[str] = set()
        for task in self.tasks:
            found |= template_fields(task.description) | template_fields(task.expected_output)
            found |= template_fields(task.output_file or "")
        for agent in self.agents:
            for text in (agent.role, agent.goal, agent.backstory):
                found |= template_fields(text)
        return found


# One grammar for finding placeholders and for filling them in, so validation and execution agree:
# "{name}" is a placeholder, "{{" and "}}" are escaped braces, anything else is literal text.
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_fields(text: str) -> set[str]:
    """The ``{name}`` placeholders of a text (``{{``/``}}`` escape braces)."""
    return {m.group(1) for m in _TEMPLATE_TOKEN.finditer(text) if m.group(1)}


def interpolate(text: str, inputs: dict[str, Any]) -> str:
    """Fill placeholders with the inputs' text. Nothing is evaluated (no format spec, attribute or
    index access), so inputs cannot inject template expressions; unknown names stay as written."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        return str(inputs[name]) if name in inputs else match.group(0)

    return _TEMPLATE_TOKEN.sub(fill, text)


def missing_inputs(spec: CrewSpec, inputs: dict[str, Any]) -> list[str]:
    return sorted(spec.placeholders() - set(inputs))


Problem = tuple[tuple[str | int, ...], str]


def reference_problems(spec: CrewSpec) -> list[Problem]:
    """Cross-field problems: duplicate names, unknown agents or tasks, context cycles."""
    problems: list[Problem] = []
    for kind, names in (("agents", [a.name for a in spec.agents]), ("tasks", [t.name for t in spec.tasks])):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(((kind, i, "name"), f"duplicate name {name!r}"))
            seen.add(name)
    agent_names = {a.name for a in spec.agents}
    position = {t.name: i for i, t in enumerate(spec.tasks)}
    for i, task in enumerate(spec.tasks):
        if task.agent not in agent_names:
            problems.append((("tasks", i, "agent"), f"unknown agent {task.agent!r}"))
        for j, ref in enumerate(task.context or []):
            if ref not in position:
                problems.append((("tasks", i, "context", j), f"unknown task {ref!r}"))
    cycles = _context_cycles(spec.tasks)
    problems.extend(
        (("tasks", position[c[0]], "context"), "context cycle: " + " -> ".join(c)) for c in cycles
    )
    if not cycles:
        # Sequential process: a task can only see outputs of tasks that ran before it.
        for i, task in enumerate(spec.tasks):
            for j, ref in enumerate(task.context or []):
                if ref in position and position[ref] >= i:
                    problems.append(
                        (("tasks", i, "context", j), f"{ref!r} runs after {task.name!r} in a sequential crew")
                    )
    return problems


def source_problems(spec: CrewSpec) -> list[Problem]:
    """What only a Python crew can do: a JSON spec has no manager and no pydantic classes, and
    names no code."""
    problems: list[Problem] = []
    if spec.source == "spec":
        if spec.process != "sequential":
            problems.append(
                (("process",), "a JSON spec runs sequentially; hierarchical crews are Python crews")
            )
        for i, task in enumerate(spec.tasks):
            if task.output_format != "raw":
                problems.append((("tasks", i, "output_format"), "structured outputs need a Python crew"))
        if spec.reference is not None:
            problems.append((("reference",), "only a worker registers a crew by reference"))
    problems.extend(_async_problems(spec.tasks))
    return problems


def _async_problems(tasks: list[TaskSpec]) -> list[Problem]:
    """CrewAI's rules for asynchronous tasks: one runs alongside its async neighbours, so it cannot
    read their outputs, and a crew ends with at most one of them."""
    problems: list[Problem] = []
    group: set[str] = set()
    for i, task in enumerate(tasks):
        if not task.async_execution:
            group = set()
            continue
        for j, ref in enumerate(task.context or []):
            if ref in group:
                problems.append((("tasks", i, "context", j), f"{ref!r} runs concurrently with {task.name!r}"))
        group.add(task.name)
    if len(tasks) >= 2 and tasks[-1].async_execution and tasks[-2].async_execution:
        problems.append(
            (("tasks", len(tasks) - 1, "async_execution"), "a crew ends with at most one async task")
        )
    return problems


def _context_cycles(tasks: list[TaskSpec]) -> list[list[str]]:
    graph = {t.name: list(t.context or []) for t in tasks}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt in graph and state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in graph:
        if state.get(name) is None:
            visit(name, [name])
    return cycles
