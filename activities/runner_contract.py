"""What the crew activity asks of a task runner: light, so importing it does not import CrewAI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class TaskRunRequest:
    agent: dict[str, Any]  # AgentSpec
    task: dict[str, Any]  # TaskSpec
    inputs: dict[str, Any]
    context: dict[str, str]  # task name -> output, in the order the task lists them


@dataclass
class TaskRunOutcome:
    output: str
    model: str


class TaskRunner(Protocol):
    def run(self, request: TaskRunRequest) -> TaskRunOutcome: ...
