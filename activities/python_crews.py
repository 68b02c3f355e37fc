"""Python crews on a worker: a user's CrewAI project, found by reference, built once, put behind
crewrun's boundaries, described by a manifest, and copied for every task attempt.

The user's code runs as it is: their ``Agent`` and ``Task`` objects with their tools, output
types, guardrails, callbacks and LLMs. What crewrun changes on the objects it built: every LLM slot
holds a :class:`~activities.llm_boundary.BoundaryLLM`, every tool is guarded
(:mod:`activities.tool_boundary`), and CrewAI's own retries of a whole task are off
(``max_retry_limit=0``): Temporal owns retries.

Built once, because building is not free and not repeatable: a ``@CrewBase`` class registers its
hooks in a global registry on every instantiation, and every native LLM loads the CA bundle
(~60 ms of CPU). An attempt runs on ``Crew.copy()``: fresh agents and tasks (CrewAI keeps state on
them between runs), the same LLM and tool objects (shallow copies, boundaries included).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from crewai import Crew, Process, Task
from crewai.crews.utils import prepare_kickoff, prepare_task_execution
from crewai.utilities.llm_utils import create_llm
from pydantic import ValidationError

from activities.llm_boundary import BoundaryLLM, service_of
from activities.runner_contract import TaskRunRequest
from activities.task_outputs import output_format_of, restored
from activities.tool_boundary import ToolPolicy, declared_policy, guard_tool, tool_key
from backend.exceptions.execution_errors import ConfigurationError
from backend.exceptions.redaction import redact_message
from backend.settings import CrewSetting, ToolSetting
from backend.specs import CrewSpec

log = structlog.get_logger(__name__)
MANAGER = "manager"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")


class CrewNotSupported(ValueError):
    """The crew uses something crewrun cannot run durably yet; the message names it."""


@dataclass
class LoadedCrew:
    name: str
    template: Crew
    spec: CrewSpec  # the manifest: what the API and the workflow see
    agent_names: list[str]  # crew.agents[i] is agent_names[i] (copies keep the order)


@dataclass
class PreparedTask:
    task: Task
    agent: Any
    context: str
    tools: list[Any]
    model: str
    output_file: str | None


def resolve(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def load_crew(name: str, setting: CrewSetting, tools: dict[str, ToolSetting]) -> LoadedCrew:
    """Import, build and describe one crew. Raises with a message naming what is wrong."""
    target = resolve(setting.ref)
    crew, agent_names = _build(target)
    _refuse_unsupported(crew)
    _install_boundaries(crew, agent_names, tools)
    spec = manifest(name, setting, crew, agent_names, code_version(target))
    return LoadedCrew(name, crew, spec, agent_names)


def _build(target: Any) -> tuple[Crew, list[str]]:
    """A ``@CrewBase`` class (instantiated, ``.crew()`` called), a zero-argument callable returning
    a Crew, or a Crew. Agent names: a CrewBase's ``@agent`` method names, else slugs of roles."""
    instance = target() if inspect.isclass(target) else None
    if instance is not None and hasattr(instance, "crew") and callable(instance.crew):
        crew = instance.crew()
    elif isinstance(target, Crew):
        crew = target
    elif callable(target) and instance is None:
        crew = target()
    else:
        crew = instance
    if not isinstance(crew, Crew):
        raise CrewNotSupported(
            f"expected a @CrewBase class or a callable returning a crewai.Crew, got {type(crew).__name__}"
            " (Flows are not supported yet)"
        )
    methods = getattr(instance, "__crew_metadata__", {}).get("original_agents", {}) if instance else {}
    by_id = {id(getattr(instance, method)()): method for method in methods}
    names = _unique([by_id.get(id(agent)) or _slug(agent.role) for agent in crew.agents])
    return crew, names


def _refuse_unsupported(crew: Crew) -> None:
    """What cannot run durably yet is refused at registration, by name, never ignored."""
    found: list[str] = []
    if crew.process not in (Process.sequential, Process.hierarchical):
        found.append(f"process {crew.process}")
    if crew.memory:
        found.append("memory (Crew(memory=...))")
    if crew.planning:
        found.append("planning (Crew(planning=True))")
    if crew.knowledge_sources or crew.knowledge:
        found.append("knowledge (knowledge_sources on the crew)")
    if crew.stream:
        found.append("streaming (Crew(stream=True))")
    for agent in crew.agents:
        if getattr(agent, "memory", None):
            found.append(f"memory of agent {agent.role.strip()!r}")
        if getattr(agent, "knowledge_sources", None):
            found.append(f"knowledge of agent {agent.role.strip()!r}")
        if getattr(agent, "planning", False) or getattr(agent, "reasoning", False):
            found.append(f"planning of agent {agent.role.strip()!r}")
    if found:
        raise CrewNotSupported("not supported by crewrun yet: " + "; ".join(found))


def _install_boundaries(crew: Crew, agent_names: list[str], tools: dict[str, ToolSetting]) -> None:
    agents: list[Any] = list(crew.agents)  # CrewAI's Agent, typed as its base class
    for agent, name in zip(agents, agent_names, strict=True):
        agent.llm = BoundaryLLM.wrap(agent.llm, key=name)
        if agent.function_calling_llm is not None:
            agent.function_calling_llm = BoundaryLLM.wrap(create_llm(agent.function_calling_llm), key=name)
        agent.max_retry_limit = 0  # Temporal retries the task, CrewAI does not
        agent.verbose = False
        agent.tools = [guard(tool, tools) for tool in agent.tools or []]
    for task in crew.tasks:
        task.tools = [guard(tool, tools) for tool in task.tools or []]
    if crew.process == Process.hierarchical:
        manager: Any = crew.manager_agent
        if manager is not None:
            manager.llm = BoundaryLLM.wrap(manager.llm, key=MANAGER)
            manager.max_retry_limit = 0
        else:
            crew.manager_llm = BoundaryLLM.wrap(create_llm(crew.manager_llm), key=MANAGER)
    crew.verbose = False


def guard(tool: Any, tools: dict[str, ToolSetting]) -> Any:
    """A tool behind the boundary, with its policy: what its code declares, then the deployment's
    settings for its name."""
    setting = tools.get(tool_key(tool))
    policy: ToolPolicy = declared_policy(tool)
    if setting is not None:
        policy = policy.merged(setting.policy_fields())
    return guard_tool(tool, policy)


def manifest(name: str, setting: CrewSetting, crew: Crew, agent_names: list[str], version: str) -> CrewSpec:
    index = {id(agent): n for agent, n in zip(crew.agents, agent_names, strict=True)}
    agents = [_agent_entry(n, agent, setting) for agent, n in zip(crew.agents, agent_names, strict=True)]
    hierarchical = crew.process == Process.hierarchical
    if hierarchical:
        manager = crew.manager_agent
        llm = manager.llm if manager is not None else crew.manager_llm
        role = manager.role if manager is not None else "Crew Manager"
        agents.append(_agent_entry(MANAGER, _Described(role, "Manage the team", llm), setting))
    task_names = _unique([_slug(task.name or f"task_{i + 1}") for i, task in enumerate(crew.tasks)])
    _refuse_unknown_names(setting, [a["name"] for a in agents], task_names)
    by_task = {id(task): n for task, n in zip(crew.tasks, task_names, strict=True)}
    tasks = []
    for task, task_name in zip(crew.tasks, task_names, strict=True):
        options = setting.tasks.get(task_name)
        agent_name = index.get(id(task.agent)) if task.agent is not None else None
        tasks.append(
            {
                "name": task_name,
                "description": _bounded(task.description, 20000),
                "expected_output": _bounded(task.expected_output, 5000),
                "agent": MANAGER if hierarchical or agent_name is None else agent_name,
                "context": _context_names(task, by_task),
                "critical": options.critical if options and options.critical is not None else True,
                "timeout_s": options.timeout_s if options else None,
                "retry": options.retry if options else {},
                "async_execution": bool(task.async_execution),
                "human_input": bool(task.human_input),
                "output_file": getattr(task, "_original_output_file", None) or task.output_file,
                "output_format": output_format_of(task),
                "tools": [tool_key(tool) for tool in task.tools or []],
            }
        )
    data = {
        "name": name,
        "source": "python",
        "process": "hierarchical" if hierarchical else "sequential",
        "agents": agents,
        "tasks": tasks,
        "retry": setting.retry,
        "replay": setting.replay,
        "reference": setting.ref,
        "code_version": version,
    }
    try:
        return CrewSpec.model_validate(data)
    except ValidationError as exc:
        raise CrewNotSupported(f"its manifest does not validate: {exc}") from exc


@dataclass
class _Described:
    role: str
    goal: str
    llm: Any
    backstory: str = ""
    tools: tuple[Any, ...] = ()


def _agent_entry(name: str, agent: Any, setting: CrewSetting) -> dict[str, Any]:
    llm = agent.llm.inner if isinstance(agent.llm, BoundaryLLM) else agent.llm
    base_url = getattr(llm, "base_url", None)
    options = setting.agents.get(name)
    return {
        "name": name,
        "role": _bounded(agent.role, 500) or name,
        "goal": _bounded(agent.goal, 5000) or name,
        "backstory": _bounded(agent.backstory or "", 20000),
        "llm": {
            "model": str(getattr(llm, "model", None) or type(llm).__name__)[:200],
            "base_url": base_url if isinstance(base_url, str) and base_url.startswith("http") else None,
            "service": service_of(llm)[:100],
        },
        "fallback_llms": [f.model_dump(mode="json") for f in options.fallback_llms] if options else [],
        "tools": [tool_key(tool) for tool in agent.tools or []],
    }


def _refuse_unknown_names(setting: CrewSetting, agent_names: list[str], task_names: list[str]) -> None:
    """A deployment's options for an agent or task the crew does not have are a typo, and a typo
    here would silently drop a fallback LLM or a retry budget: refused, naming the real names."""
    for kind, configured, known in (
        ("agents", setting.agents, agent_names),
        ("tasks", setting.tasks, task_names),
    ):
        unknown = sorted(set(configured) - set(known))
        if unknown:
            raise CrewNotSupported(
                f"its settings name {kind} it does not have: {', '.join(unknown)}"
                f" (its {kind}: {', '.join(known)})"
            )


def _context_names(task: Task, by_task: dict[int, str]) -> list[str] | None:
    context = task.context
    if not isinstance(context, list):
        return None  # NOT_SPECIFIED: every earlier task, CrewAI's default
    return [by_task[id(t)] for t in context]


def code_version(target: Any) -> str:
    """A digest of the crew's code: its module and, for a @CrewBase project, its YAML configs."""
    digest = hashlib.sha256()
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    files: list[Path] = []
    if module is not None and getattr(module, "__file__", None):
        files.append(Path(module.__file__))  # type: ignore[arg-type]
    base = getattr(target, "base_directory", None)
    for attribute in ("original_agents_config_path", "original_tasks_config_path"):
        relative = getattr(target, attribute, None)
        if base is not None and isinstance(relative, str):
            files.append(Path(base) / relative)
    for path in files:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare(loaded: LoadedCrew, request: TaskRunRequest, fallback_llm: Callable[[Any], Any]) -> PreparedTask:
    """One task of a fresh copy of the crew, ready to run as ``kickoff(inputs=...)`` would run it,
    with the outputs of the tasks before it restored from the checkpoint. ``fallback_llm`` builds
    the LLM of an LLMSpec (the worker's cache), for an attempt on the agent's fallback."""
    crew = loaded.template.copy()
    prepare_kickoff(crew, dict(request.inputs))
    if crew.process == Process.hierarchical:
        crew._create_manager_agent()
        manager: Any = crew.manager_agent
        manager.max_retry_limit = 0
    index = request.task_index
    task = crew.tasks[index]
    names = [t.name for t in loaded.spec.tasks]
    prior = []
    for earlier, earlier_name in zip(crew.tasks[:index], names[:index], strict=True):
        saved = request.context.get(earlier_name)
        if saved is not None:
            earlier.output = restored(earlier, saved)
            prior.append(earlier.output)
    data, _, _ = prepare_task_execution(crew, task, index, None, prior, None)
    context = Crew._get_context(task, prior)
    if request.llm_index > 0:
        fallback = request.agent.llm  # the chain's LLM this attempt calls
        request.calls.llm_overrides[request.agent.name] = fallback_llm(fallback)
    output_file = task.output_file
    task.output_file = None  # crewrun writes it, once, under the execution's directory
    task.human_input = False  # a person answers through the workflow, never input() on a worker
    agent = data.agent
    llm = getattr(agent, "llm", None)
    model = str(getattr(request.calls.llm_overrides.get(request.agent.name, llm), "model", "") or "")
    return PreparedTask(task, agent, context, list(data.tools), model, output_file)


def _slug(text: str) -> str:
    return _NAME_CHARS.sub("_", text.strip()).strip("_.-")[:100] or "unnamed"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return result


def _bounded(text: str | None, limit: int) -> str:
    return (text or "").strip()[:limit]


class CrewRegistry:
    """The Python crews this worker carries. A crew that fails to import or build is logged (its
    module, the exception, redacted) and left out; the others are served."""

    def __init__(self, crews: dict[str, LoadedCrew], failed: dict[str, str]) -> None:
        self.crews = crews
        self.failed = failed

    @classmethod
    def load(
        cls,
        settings: dict[str, CrewSetting],
        tools: dict[str, ToolSetting],
        paths: list[Path],
        loader: Callable[[str, CrewSetting, dict[str, ToolSetting]], LoadedCrew] = load_crew,
    ) -> CrewRegistry:
        for path in paths:
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
        crews: dict[str, LoadedCrew] = {}
        failed: dict[str, str] = {}
        for name, setting in settings.items():
            try:
                crews[name] = loader(name, setting, tools)
            except Exception as exc:
                reason = redact_message(f"{type(exc).__name__}: {exc}")[:2000]
                failed[name] = reason
                log.error("crew.load_failed", crew=name, ref=setting.ref, error=reason)
        return cls(crews, failed)

    def llms(self) -> list[Any]:
        """The LLM objects the crews' code built (behind their boundaries)."""
        found: list[Any] = []
        for loaded in self.crews.values():
            crew = loaded.template
            agents: list[Any] = list(crew.agents)
            slots = [a.llm for a in agents] + [a.function_calling_llm for a in agents]
            slots += [crew.manager_llm, crew.manager_agent.llm if crew.manager_agent else None]
            found += [s.inner for s in slots if isinstance(s, BoundaryLLM)]
        return found

    def get(self, name: str) -> LoadedCrew:
        loaded = self.crews.get(name)
        if loaded is None:
            raise ConfigurationError(
                f"this worker does not carry the Python crew {name!r}", code="CONFIG_CREW_UNKNOWN"
            )
        return loaded
