"""CrewExecutionWorkflow: one crew execution, one activity per crew task, sequential process.

The checkpoint is the list of completed tasks in this workflow's state (rebuilt from history on
replay) plus their outputs in the backend DB: after a worker crash or a server restart the
workflow continues after the last completed task and never runs a finished task again.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from backend.exceptions import retry_policy
    from backend.exceptions.redaction import redact_message, redact_stack
    from backend.status import ExecutionStatus, TaskStatus
    from workflows import policies
    from workflows.contracts import (
        COMPENSATE_ACTIVITY,
        RECORD_STATUS_ACTIVITY,
        RUN_TASK_ACTIVITY,
        WORKFLOW_NAME,
        CompensationInput,
        CrewExecutionInput,
        CrewExecutionResult,
        RunTaskInput,
        StatusUpdate,
        TaskProgress,
        TaskResult,
    )

STATUS_KEY = SearchAttributeKey.for_keyword("CrewExecutionStatus")
CATEGORY_KEY = SearchAttributeKey.for_keyword("CrewErrorCategory")
CODE_KEY = SearchAttributeKey.for_keyword("CrewErrorCode")
CREW_KEY = SearchAttributeKey.for_keyword("CrewName")


@workflow.defn(name=WORKFLOW_NAME)
class CrewExecutionWorkflow:
    def __init__(self) -> None:
        self._tasks: list[TaskProgress] = []
        self._status: str = ExecutionStatus.PENDING

    @workflow.query(name="progress")
    def progress(self) -> list[TaskProgress]:
        return self._tasks

    @workflow.query(name="status")
    def status(self) -> str:
        return self._status

    @workflow.run
    async def run(self, inp: CrewExecutionInput) -> CrewExecutionResult:
        try:
            return await self._run(inp)
        except (ApplicationError, asyncio.CancelledError):
            raise
        except Exception as bug:
            # A bug in workflow code (or an input it cannot handle) fails the execution with a
            # code and a record, instead of retrying the workflow task forever.
            error = _workflow_code_error(bug)
            await self._end_badly(inp, ExecutionStatus.FAILED, "workflow code error", error)
            raise ApplicationError(
                error["message"], error, type=error["category"], non_retryable=True
            ) from bug

    async def _run(self, inp: CrewExecutionInput) -> CrewExecutionResult:
        spec = inp.spec
        agents = {a["name"]: a for a in spec["agents"]}
        self._tasks = [TaskProgress(name=t["name"], agent=t["agent"]) for t in spec["tasks"]]
        workflow.upsert_search_attributes([CREW_KEY.value_set(inp.crew_name)])
        await self._set_status(inp, ExecutionStatus.RUNNING, "execution started")

        names = [t["name"] for t in spec["tasks"]]
        for index, task in enumerate(spec["tasks"]):
            progress = self._tasks[index]
            if task["name"] in inp.seeded:
                # Completed in an earlier run (a dead letter's checkpoint): never run again.
                progress.status = TaskStatus.COMPLETED
                continue
            context = task.get("context")
            try:
                result = await self._run_task(
                    inp,
                    task,
                    agents[task["agent"]],
                    progress,
                    names[:index] if context is None else list(context),
                )
            except asyncio.CancelledError:
                progress.status = TaskStatus.FAILED
                await self._end_badly(inp, ExecutionStatus.CANCELLED, "execution cancelled", None)
                raise
            except ActivityError as err:
                # After a cancellation the SDK still lets the workflow schedule activities, so the
                # final status is recorded on every path.
                if is_cancelled_exception(err):
                    progress.status = TaskStatus.FAILED
                    await self._end_badly(inp, ExecutionStatus.CANCELLED, "execution cancelled", None)
                    raise asyncio.CancelledError() from err
                error = _error_record(err, task["name"], task["agent"])
                progress.status = TaskStatus.FAILED
                progress.error = error
                progress.attempts = int(error.get("attempt") or progress.attempts)
                workflow.set_current_details(_error_card(error))
                await self._end_badly(inp, ExecutionStatus.FAILED, f"task {task['name']} failed", error)
                raise ApplicationError(
                    f"[{error['code']}] task {task['name']} failed: {error['message'][:300]}",
                    error,
                    type=error["category"],
                    non_retryable=True,
                ) from err
            progress.status = TaskStatus.COMPLETED
            progress.attempts = result.attempts
            progress.output = result.output_preview
            progress.finished_at = workflow.now().isoformat()

        await self._set_status(inp, ExecutionStatus.COMPLETED, "execution completed", None)
        return CrewExecutionResult(inp.execution_id, self._status, self._tasks)

    async def _run_task(
        self,
        inp: CrewExecutionInput,
        task: dict[str, Any],
        agent: dict[str, Any],
        progress: TaskProgress,
        context: list[str],
    ) -> TaskResult:
        progress.status = TaskStatus.RUNNING
        progress.started_at = workflow.now().isoformat()
        table = policies.task_retry_table(inp.spec, task, inp.tuning)
        return await workflow.execute_activity(
            RUN_TASK_ACTIVITY,
            RunTaskInput(
                execution_id=inp.execution_id,
                crew_name=inp.crew_name,
                task=task,
                agent=agent,
                context=context,
                inputs=inp.inputs,
                retry=retry_policy.to_json(table),
            ),
            result_type=TaskResult,
            **policies.task_activity_options(task, agent, inp.tuning, table),
        )

    async def _end_badly(
        self, inp: CrewExecutionInput, status: str, reason: str, error: dict[str, Any] | None
    ) -> None:
        """Failure or cancellation: one compensation activity writes the final status, the final
        error record and the dead letter in one transaction (idempotent per run; retried
        patiently so a database outage delays it, never loses it). After a cancellation the SDK
        still lets the workflow schedule activities, so it runs on that path too."""
        self._status = status
        updates = [STATUS_KEY.value_set(status)]
        if error:
            updates += [CATEGORY_KEY.value_set(error["category"]), CODE_KEY.value_set(error["code"])]
        workflow.upsert_search_attributes(updates)
        await workflow.execute_activity(
            COMPENSATE_ACTIVITY,
            CompensationInput(inp.execution_id, status, reason, error),
            **policies.COMPENSATION_ACTIVITY_OPTIONS,
        )

    async def _set_status(
        self, inp: CrewExecutionInput, status: str, message: str, error: dict[str, Any] | None = None
    ) -> None:
        self._status = status
        updates = [STATUS_KEY.value_set(status)]
        if error:
            updates += [CATEGORY_KEY.value_set(error["category"]), CODE_KEY.value_set(error["code"])]
        workflow.upsert_search_attributes(updates)
        await workflow.execute_activity(
            RECORD_STATUS_ACTIVITY,
            StatusUpdate(inp.execution_id, status, message, error),
            **policies.STATUS_ACTIVITY_OPTIONS,
        )


def _error_record(err: ActivityError, task: str, agent: str) -> dict[str, Any]:
    """The structured record the activity boundary attached, or one for failures the boundary
    never saw (a timeout enforced by the server, a worker that died on every attempt)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        return dict(cause.details[0])
    timed_out = isinstance(cause, TemporalTimeoutError)
    return {
        "code": "TASK_TIMED_OUT" if timed_out else "TASK_FAILED",
        "category": "timeout" if timed_out else "internal",
        "severity": "high",
        "retryable": False,
        "message": redact_message(f"{type(cause or err).__name__}: {cause or err}"),
        "task": task,
        "agent": agent,
    }


def _workflow_code_error(bug: Exception) -> dict[str, Any]:
    message = redact_message(f"{type(bug).__name__}: {bug}")
    return {
        "code": "WORKFLOW_CODE_ERROR",
        "category": "internal",
        "severity": "critical",
        "retryable": False,
        "message": f"[WORKFLOW_CODE_ERROR] {message}",
        "exception_type": f"{type(bug).__module__}.{type(bug).__qualname__}",
        "stack": redact_stack("".join(traceback.format_exception(bug))),
    }


def _error_card(error: dict[str, Any]) -> str:
    """Markdown shown as the workflow's current details in the Web UI."""
    return (
        f"**{error['code']}** ({error['category']}, {error['severity']})\n\n"
        f"task `{error.get('task')}`, agent `{error.get('agent')}`, service `{error.get('service')}`, "
        f"attempt {error.get('category_attempt', '?')}/{error.get('max_attempts', '?')}\n\n"
        f"{error['message'][:500]}"
    )
