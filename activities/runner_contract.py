"""What the crew activity asks of a task runner: light, so importing it does not import CrewAI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from activities.attempt_calls import AttemptCalls
from backend.specs import AgentSpec, TaskSpec


@dataclass
class StoredOutput:
    """A task's output as the checkpoint keeps it: the text, and the structured form when the task
    asked for one (``format`` ``json``: the dict; ``pydantic``: the dict the model validates)."""

    raw: str
    json_dict: dict[str, Any] | None = None
    format: str = "raw"  # raw | json | pydantic


@dataclass
class Feedback:
    """A person's rejection of a human_input task's output: the next run sees both."""

    output: str
    feedback: str


@dataclass
class TaskRunRequest:
    agent: AgentSpec  # with the LLM of its chain this attempt calls
    task: TaskSpec
    inputs: dict[str, Any]
    context: dict[str, StoredOutput]  # task name -> output, in the order the task lists them
    source: str = "spec"  # spec: built from the JSON spec; python: the worker's registered crew
    crew_name: str = ""
    task_index: int = 0
    llm_index: int = 0  # 0: the agent's own LLM; n: its n-th fallback
    execution_id: str = ""
    feedback: list[Feedback] = field(default_factory=list)
    calls: AttemptCalls = field(default_factory=AttemptCalls)


@dataclass
class TaskRunOutcome:
    output: str
    model: str
    json_dict: dict[str, Any] | None = None
    format: str = "raw"
    output_file: str | None = None  # where the task's output_file goes (relative, interpolated)

    def stored(self) -> StoredOutput:
        return StoredOutput(self.output, self.json_dict, self.format)


class TaskRunner(Protocol):
    def run(self, request: TaskRunRequest) -> TaskRunOutcome: ...
