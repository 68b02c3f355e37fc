"""What the crew activity asks of a task runner: light, so importing it does not import CrewAI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backend.specs import AgentSpec, TaskSpec


@dataclass
class TaskRunRequest:
    agent: AgentSpec  # with the LLM of its chain this attempt calls
    task: TaskSpec
    inputs: dict[str, Any]
    context: dict[str, str]  # task name -> output, in the order the task lists them


@dataclass
class TaskRunOutcome:
    output: str
    model: str


class TaskRunner(Protocol):
    def run(self, request: TaskRunRequest) -> TaskRunOutcome: ...
