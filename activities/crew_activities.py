"""Crew activities. Dependencies arrive through the constructor (built in worker.py), so tests
construct them with a real SQLite store and the simulator instead of patching globals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog
from temporalio import activity

from activities.errors import to_application_error
from activities.runner_contract import TaskRunner, TaskRunRequest
from backend.db.store import Store
from backend.status import ExecutionStatus, TaskStatus
from workflows.contracts import (
    OUTPUT_PREVIEW_CHARS,
    RECORD_STATUS_ACTIVITY,
    RUN_TASK_ACTIVITY,
    RunTaskInput,
    StatusUpdate,
    TaskResult,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


class CrewActivities:
    def __init__(self, *, store: Store, runner: TaskRunner, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._runner = runner
        self._executor = executor

    async def _db(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @activity.defn(name=RECORD_STATUS_ACTIVITY)
    async def record_execution_status(self, update: StatusUpdate) -> str | None:
        result = await self._db(
            self._store.transition_execution, update.execution_id, update.status, error=update.error
        )
        level = "error" if update.status == ExecutionStatus.FAILED else "info"
        if result.changed:  # a retried activity must not log the change twice
            await self._db(
                self._store.add_log,
                update.execution_id,
                f"execution.{update.status}",
                update.message,
                level=level,
                data={"error": update.error} if update.error else None,
            )
        log.info("execution.status", execution_id=update.execution_id, status=result.status)
        return result.status

    @activity.defn(name=RUN_TASK_ACTIVITY)
    async def run_crew_task(self, inp: RunTaskInput) -> TaskResult:
        info = activity.info()
        task, agent = inp.task["name"], inp.agent["name"]
        bound = log.bind(
            execution_id=inp.execution_id,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            task=task,
            agent=agent,
            attempt=info.attempt,
        )
        row = await self._db(self._store.start_task_attempt, inp.execution_id, task, info.attempt)
        if row is not None and row.status == TaskStatus.COMPLETED:
            # An earlier attempt committed the output and died before reporting it: reuse it.
            bound.info("task.output_reused")
            return _result(task, row.attempts, row.output or "", row.model, reused=True)
        if info.attempt > 1:
            await self._db(self._store.transition_execution, inp.execution_id, ExecutionStatus.RETRYING)
        await self._db(
            self._store.add_log, inp.execution_id, "task.started", f"attempt {info.attempt}", task=task
        )
        context = await self._db(self._store.completed_outputs, inp.execution_id, inp.context)
        request = TaskRunRequest(
            agent=inp.agent,
            task=inp.task,
            inputs=inp.inputs,
            context={n: context[n] for n in inp.context if n in context},
        )
        max_attempts = info.retry_policy.maximum_attempts if info.retry_policy else 0
        try:
            outcome = await self._heartbeating(self._runner.run, request)
        except Exception as exc:
            error = to_application_error(
                exc, task=task, agent=agent, attempt=info.attempt, max_attempts=max_attempts
            )
            record = error.details[0]
            final = error.non_retryable or (0 < max_attempts <= info.attempt)
            await self._db(self._store.fail_task, inp.execution_id, task, error=record, final=final)
            await self._db(
                self._store.add_log,
                inp.execution_id,
                "task.attempt_failed",
                error.message,
                level="warning",
                task=task,
                data={"code": record["code"], "category": record["category"]},
            )
            bound.warning("task.attempt_failed", code=record["code"], category=record["category"])
            raise error from None
        row = await self._db(
            self._store.complete_task,
            inp.execution_id,
            task,
            output=outcome.output,
            model=outcome.model,
            attempt=info.attempt,
        )
        if info.attempt > 1:
            await self._db(self._store.transition_execution, inp.execution_id, ExecutionStatus.RUNNING)
        await self._db(
            self._store.add_log,
            inp.execution_id,
            "task.completed",
            f"{len(row.output or '')} chars from {outcome.model}",
            task=task,
        )
        bound.info("task.completed", chars=len(row.output or ""))
        return _result(task, row.attempts, row.output or "", row.model)

    async def _heartbeating(self, fn: Callable[[TaskRunRequest], T], request: TaskRunRequest) -> T:
        """Run the blocking CrewAI call in the task pool, heartbeating until it returns."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, request)
        timeout = activity.info().heartbeat_timeout
        interval = max(0.2, timeout.total_seconds() / 3) if timeout else 10.0
        while True:
            done, _ = await asyncio.wait({future}, timeout=interval)
            if done:
                return future.result()
            activity.heartbeat()


def _result(task: str, attempts: int, output: str, model: str | None, reused: bool = False) -> TaskResult:
    return TaskResult(
        task=task,
        attempts=attempts,
        output_preview=output[:OUTPUT_PREVIEW_CHARS],
        output_chars=len(output),
        model=model,
        reused=reused,
    )
