"""The workflow's decisions on their own: the real CrewExecutionWorkflow on the dev server, with
stub activities registered under the real names (the samples-python way), so pausing, resuming,
skipping, aborting and degrading are checked without CrewAI, a database or a provider."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from backend.exceptions.records import ErrorRecord
from backend.specs import CrewSpec
from tests.support import research_spec
from workflows.contracts import (
    COMPENSATE_ACTIVITY,
    RECORD_STATUS_ACTIVITY,
    RUN_TASK_ACTIVITY,
    SKIP_TASK_ACTIVITY,
    WORKFLOW_NAME,
    AbortRequest,
    ActivityTuning,
    CompensationInput,
    CrewExecutionInput,
    CrewExecutionResult,
    FinishExecution,
    ResumeRequest,
    RunTaskInput,
    SkipRequest,
    SkipTaskInput,
    StatusUpdate,
    TaskResult,
)
from workflows.crew_execution import CrewExecutionWorkflow


def failure(code: str, category: str, task: str) -> ApplicationError:
    record = ErrorRecord(
        code=code,
        category=category,
        severity="high",
        retryable=False,
        message=f"{code}!",
        task=task,
        agent="a",
        attempt=1,
    )
    return ApplicationError(f"[{code}]", record.to_dict(), type=category, non_retryable=True)


@dataclass
class Stubs:
    """Activities under the real names. ``fail`` maps a task to the failures its next attempts
    raise, one per attempt; everything done is recorded."""

    fail: dict[str, list[ApplicationError]] = field(default_factory=dict)
    runs: list[RunTaskInput] = field(default_factory=list)
    statuses: list[tuple[str, str]] = field(default_factory=list)
    compensations: list[CompensationInput] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @activity.defn(name=RUN_TASK_ACTIVITY)
    async def run_task(self, inp: RunTaskInput) -> TaskResult:
        self.runs.append(inp)
        pending = self.fail.get(inp.task["name"])
        if pending:
            raise pending.pop(0)
        return TaskResult(task=inp.task["name"], attempts=1, output_preview="done", output_chars=4)

    @activity.defn(name=RECORD_STATUS_ACTIVITY)
    async def record_status(self, update: StatusUpdate) -> str:
        self.statuses.append((update.status, update.message))
        return update.status

    @activity.defn(name=COMPENSATE_ACTIVITY)
    async def compensate(self, inp: CompensationInput) -> str:
        self.compensations.append(inp)
        return "dead-letter-1"

    @activity.defn(name=SKIP_TASK_ACTIVITY)
    async def skip(self, inp: SkipTaskInput) -> None:
        self.skipped.append(inp.task)


@pytest.fixture
async def stubs(temporal_client: Client) -> AsyncIterator[tuple[Stubs, str]]:
    queue = f"logic-{uuid.uuid4().hex[:8]}"
    s = Stubs()
    worker = Worker(
        temporal_client,
        task_queue=queue,
        workflows=[CrewExecutionWorkflow],
        activities=[s.run_task, s.record_status, s.compensate, s.skip],
    )
    async with worker:
        yield s, queue


async def start(
    client: Client, queue: str, *, optional: str | None = None, pause_timeout_s: float = 3600
) -> WorkflowHandle[Any, CrewExecutionResult]:
    spec = research_spec(lambda a: f"http://127.0.0.1:9/agents/{a}/v1")
    for task in spec["tasks"]:
        task["critical"] = task["name"] != optional
    inp = CrewExecutionInput(
        execution_id=uuid.uuid4().hex,
        crew_name="research",
        spec=CrewSpec.model_validate(spec).model_dump(mode="json"),
        inputs={"topic": "t"},
        tuning=ActivityTuning(heartbeat_timeout_s=5, pause_timeout_s=pause_timeout_s),
    )
    return await client.start_workflow(
        WORKFLOW_NAME, inp, id=f"logic-{inp.execution_id}", task_queue=queue, result_type=CrewExecutionResult
    )


async def until_paused(handle: WorkflowHandle[Any, Any]) -> None:
    while await handle.query("status") != "paused":
        await asyncio.sleep(0.02)


async def test_the_first_task_marks_the_execution_running_and_no_status_activity_does(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    result = await (await start(temporal_client, queue)).result()
    assert result.status == "completed"
    assert [r.mark_running for r in s.runs] == [True, False, False]
    assert [r.finish_execution for r in s.runs] == [
        None,
        None,
        FinishExecution("completed", "execution completed"),
    ]
    assert [r.on_final_failure.otherwise for r in s.runs] == ["failed"] * 3
    assert s.statuses == []  # "running" rode with task 1, the end with task 3


async def test_a_paused_task_is_retried_after_resume_with_the_patched_inputs(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    s.fail["analyse"] = [failure("LLM_AUTH_FAILED", "authentication", "analyse")]
    handle = await start(temporal_client, queue)
    await until_paused(handle)
    await handle.signal("resume", ResumeRequest(inputs_patch={"topic": "patched"}))
    result = await handle.result()
    assert result.status == "completed"
    assert [r.task["name"] for r in s.runs] == ["research", "analyse", "analyse", "write"]
    assert s.runs[2].inputs == {"topic": "patched"} and s.runs[3].inputs == {"topic": "patched"}
    assert [status for status, _ in s.statuses] == ["paused", "running"]
    assert s.runs[-1].finish_execution == FinishExecution("completed", "execution completed")
    assert s.compensations == []


async def test_a_skipped_task_leaves_a_gap_and_the_crew_ends_degraded(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    s.fail["analyse"] = [failure("LLM_QUOTA_EXHAUSTED", "quota_exhausted", "analyse")]
    handle = await start(temporal_client, queue)
    await until_paused(handle)
    await handle.signal("skip", SkipRequest(task="analyse", output="stand-in"))
    result = await handle.result()
    assert (result.status, result.gaps) == ("degraded", ["analyse"])
    assert s.skipped == ["analyse"] and [r.task["name"] for r in s.runs] == ["research", "analyse", "write"]
    assert [t.status for t in result.tasks] == ["completed", "skipped", "completed"]
    assert s.runs[-1].finish_execution == FinishExecution("degraded", "execution degraded; gaps: analyse")
    assert [status for status, _ in s.statuses] == ["paused", "running"]


async def test_an_aborted_pause_fails_the_execution_with_one_compensation(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    s.fail["research"] = [failure("CONFIG_SECRET_MISSING", "configuration", "research")]
    handle = await start(temporal_client, queue)
    await until_paused(handle)
    await handle.signal("abort", AbortRequest(reason="wrong crew"))
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    (compensation,) = s.compensations
    assert compensation.status == "failed" and compensation.error is not None
    assert compensation.error["code"] == "EXECUTION_ABORTED"
    assert compensation.error["cause"]["code"] == "CONFIG_SECRET_MISSING"
    assert [r.task["name"] for r in s.runs] == ["research"]


async def test_an_unanswered_pause_times_out_into_the_dead_letter_path(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    s.fail["write"] = [failure("LLM_AUTH_FAILED", "authentication", "write")]
    handle = await start(temporal_client, queue, pause_timeout_s=0.3)
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    (compensation,) = s.compensations
    assert compensation.error is not None and compensation.error["code"] == "EXECUTION_PAUSE_TIMEOUT"


async def test_an_optional_task_failing_for_good_degrades_without_a_pause(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    s.fail["analyse"] = [failure("LLM_CONTENT_REFUSED", "content_policy", "analyse")]
    result = await (await start(temporal_client, queue, optional="analyse")).result()
    assert (result.status, result.gaps) == ("degraded", ["analyse"])
    assert [r.on_final_failure.otherwise for r in s.runs] == ["failed", "degraded", "failed"]
    assert s.statuses == []
    assert s.runs[-1].finish_execution == FinishExecution("degraded", "execution degraded; gaps: analyse")


async def test_a_critical_task_failing_for_good_fails_the_execution_once(
    temporal_client: Client, stubs: tuple[Stubs, str]
) -> None:
    s, queue = stubs
    s.fail["analyse"] = [failure("LLM_CONTENT_REFUSED", "content_policy", "analyse")]
    with pytest.raises(WorkflowFailureError):
        await (await start(temporal_client, queue)).result()
    (compensation,) = s.compensations
    assert compensation.error is not None and compensation.error["code"] == "LLM_CONTENT_REFUSED"
    assert [r.task["name"] for r in s.runs] == ["research", "analyse"]
