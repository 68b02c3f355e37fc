"""A task's output between CrewAI and the checkpoint: what a finished task leaves in the database,
and the ``TaskOutput`` a later task (or a later attempt, after a worker crash) gets back from it,
with its structured form restored as the pydantic model or dict the user's code expects."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from crewai import Task
from crewai.tasks.output_format import OutputFormat
from crewai.tasks.task_output import TaskOutput
from pydantic import BaseModel

from activities.runner_contract import StoredOutput
from backend.exceptions.execution_errors import LLMOutputError


def stored(output: TaskOutput) -> StoredOutput:
    """What the checkpoint keeps of a finished task."""
    raw = str(output.raw)
    if not raw.strip():
        raise LLMOutputError("the agent returned an empty answer")
    if isinstance(output.pydantic, BaseModel):
        return StoredOutput(raw, output.pydantic.model_dump(mode="json"), OutputFormat.PYDANTIC.value)
    if isinstance(output.json_dict, dict):
        return StoredOutput(
            raw, json.loads(json.dumps(output.json_dict, default=str)), OutputFormat.JSON.value
        )
    return StoredOutput(raw)


def restored(task: Task, saved: StoredOutput) -> TaskOutput:
    """The TaskOutput CrewAI would have made for ``task``, from the checkpoint."""
    pydantic_output: BaseModel | None = None
    json_dict: dict[str, Any] | None = None
    output_format = OutputFormat.RAW
    if saved.format == OutputFormat.PYDANTIC.value and saved.json_dict is not None and task.output_pydantic:
        pydantic_output = task.output_pydantic.model_validate(saved.json_dict)
        output_format = OutputFormat.PYDANTIC
    elif (
        saved.format in (OutputFormat.JSON.value, OutputFormat.PYDANTIC.value) and saved.json_dict is not None
    ):
        json_dict = saved.json_dict
        output_format = OutputFormat.JSON
    return TaskOutput(
        name=task.name,
        description=task.description,
        expected_output=task.expected_output,
        raw=saved.raw,
        pydantic=pydantic_output,
        json_dict=json_dict,
        agent=task.agent.role if task.agent is not None else "",
        output_format=output_format,
    )


def output_format_of(task: Task) -> str:
    if task.output_pydantic is not None:
        return OutputFormat.PYDANTIC.value
    if task.output_json is not None:
        return OutputFormat.JSON.value
    return OutputFormat.RAW.value


def write_output_file(directory: Path, relative: str, saved: StoredOutput) -> Path:
    """Write a task's output_file under its execution's directory, atomically (a reader never
    sees half a file; writing it again, after a retry that reused the output, writes the same).
    The content is what CrewAI writes: the structured output as JSON when there is one."""
    target = (directory / relative).resolve()
    if not target.is_relative_to(directory.resolve()):
        raise ValueError(f"output_file {relative!r} leaves the execution's directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    content = json.dumps(saved.json_dict, indent=2) if saved.json_dict is not None else saved.raw
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(content)
    os.replace(temporary, target)
    return target
