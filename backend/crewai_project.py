"""Import a CrewAI project's ``config/agents.yaml`` + ``config/tasks.yaml`` as a CrewSpec.

CrewAI's layout keys agents and tasks by name; tasks name their agent and their ``context`` tasks.
Keys crewrun does not model (tools, callbacks, output files) are reported, not silently dropped.
The LLM is not part of CrewAI's YAML (it lives in crew.py), so the importer takes it as a parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from backend.specs import CrewSpec

_AGENT_KEYS = {"role", "goal", "backstory", "llm"}
_TASK_KEYS = {"description", "expected_output", "agent", "context"}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of names to definitions")
    return data


def find_config(project: Path) -> tuple[Path, Path]:
    for base in (project, project / "config", *sorted(project.glob("src/*/config"))):
        agents, tasks = base / "agents.yaml", base / "tasks.yaml"
        if agents.exists() and tasks.exists():
            return agents, tasks
    raise FileNotFoundError(f"no agents.yaml + tasks.yaml under {project} (or its config/ folders)")


def import_project(project: Path, *, name: str, llm: dict[str, Any]) -> tuple[CrewSpec, list[str]]:
    """Returns the validated spec and warnings about keys that were not imported."""
    agents_path, tasks_path = find_config(project)
    agents_raw, tasks_raw = _load(agents_path), _load(tasks_path)
    warnings: list[str] = []
    agents = []
    for agent_name, body in agents_raw.items():
        body = body or {}
        warnings += [f"agent {agent_name}: ignored key {k!r}" for k in sorted(set(body) - _AGENT_KEYS)]
        agent_llm = dict(llm)
        if isinstance(body.get("llm"), str):
            agent_llm["model"] = body["llm"]
        elif "llm" in body:
            warnings.append(f"agent {agent_name}: ignored llm {body['llm']!r} (only a model name string)")
        agents.append(
            {
                "name": agent_name,
                "role": str(body.get("role", "")).strip(),
                "goal": str(body.get("goal", "")).strip(),
                "backstory": str(body.get("backstory", "")).strip(),
                "llm": agent_llm,
            }
        )
    tasks = []
    for task_name, body in tasks_raw.items():
        body = body or {}
        warnings += [f"task {task_name}: ignored key {k!r}" for k in sorted(set(body) - _TASK_KEYS)]
        task: dict[str, Any] = {
            "name": task_name,
            "description": str(body.get("description", "")).strip(),
            "expected_output": str(body.get("expected_output", "")).strip(),
            "agent": body.get("agent"),
        }
        if "context" in body:
            context = body["context"] or []
            task["context"] = [context] if isinstance(context, str) else list(context)
        tasks.append(task)
    spec = CrewSpec.model_validate({"name": name, "agents": agents, "tasks": tasks})
    return spec, warnings
