"""Crew activities. Dependencies arrive through the constructor (built in worker.py), so tests
construct them with a real SQLite store and the simulator instead of patching globals."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
from temporalio import activity

from activities.alert_activities import raise_alert
from activities.attempt_calls import AttemptCalls, CallFailed
from activities.attempt_records import AttemptRecords, Begun, JournalConfig
from activities.boundary import AttemptContext, AttemptState, ErrorBoundary, Failure
from activities.runner_contract import StoredOutput, TaskRunner
from backend.alerts import Alerter, AlertEvent
from backend.breaker import CircuitBreaker
from backend.db.models import TaskRun
from backend.db.store import LogLine, Store
from backend.exceptions import retry_policy
from backend.exceptions.redaction import redact_message
from backend.metrics import Metrics
from backend.specs import AgentSpec, TaskSpec
from backend.status import TERMINAL_EXECUTION, ExecutionStatus, TaskStatus
from workflows.contracts import (
    COMPENSATE_ACTIVITY,
    OUTPUT_PREVIEW_CHARS,
    RECORD_FEEDBACK_ACTIVITY,
    RECORD_STATUS_ACTIVITY,
    RUN_TASK_ACTIVITY,
    SKIP_TASK_ACTIVITY,
    CompensationInput,
    FeedbackInput,
    RunTaskInput,
    SkipTaskInput,
    StatusUpdate,
    TaskResult,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
# This worker process ran out of memory or file descriptors. Whatever half-failed with it (a
# thread that did not start, a connection a pool lost) stays broken, so the worker drains and
# exits for its supervisor to start a fresh one; the failed task is retried under its category.
PROCESS_EXHAUSTION_CODES = frozenset({"RESOURCE_MEMORY", "RESOURCE_FILE_LIMIT"})


class CrewActivities:
    def __init__(
        self,
        *,
        store: Store,
        runner: TaskRunner,
        executor: ThreadPoolExecutor,
        breaker: CircuitBreaker,
        boundary: ErrorBoundary | None = None,
        metrics: Metrics | None = None,
        alerter: Alerter | None = None,
        alert_max_interval_s: float = 30.0,
        on_exhausted: Callable[[str], None] | None = None,
        outputs_dir: Path | None = None,
        journal: JournalConfig | None = None,
    ) -> None:
        self._on_exhausted = on_exhausted
        # Where tasks' output_files go: <outputs_dir>/<execution id>/<output_file>.
        self._outputs_dir = outputs_dir
        self._alerter = alerter
        self._alert_max_interval_s = alert_max_interval_s
        self._store = store
        self._breaker = breaker
        self._records = AttemptRecords(store.db, breaker, journal)
        self._metrics = metrics or Metrics()
        self._runner = runner
        self._executor = executor
        self._boundary = boundary or ErrorBoundary()

    async def _db(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @activity.defn(name=RECORD_STATUS_ACTIVITY)
    async def record_execution_status(self, update: StatusUpdate) -> str | None:
        _bind_execution(update.execution_id)
        level = "error" if update.status == ExecutionStatus.FAILED else "info"
        line = LogLine(
            f"execution.{update.status}",
            update.message,
            level,
            {"error": update.error} if update.error else None,
        )
        result = await self._db(
            self._store.transition_execution, update.execution_id, update.status, error=update.error, log=line
        )
        if result.changed and update.status in TERMINAL_EXECUTION:
            self._metrics.executions_finished.labels(update.status).inc()
        if update.status == ExecutionStatus.PAUSED:
            # Also on a retry whose first attempt committed the pause and died before alerting;
            # this activity (one per pause) names the incident, so a retry raises nothing twice.
            info = activity.info()
            code = (update.error or {}).get("code", "")
            await self._alert(
                AlertEvent(
                    "paused",
                    f"execution {update.execution_id} paused: {code}",
                    severity="high",
                    execution_id=update.execution_id,
                    error=update.error,
                    incident=f"{info.workflow_run_id}:{info.activity_id}",
                )
            )
        log.info("execution.status", execution_id=update.execution_id, status=result.status)
        return result.status

    @activity.defn(name=COMPENSATE_ACTIVITY)
    async def compensate_execution(self, inp: CompensationInput) -> str:
        """Returns the dead letter's id. Idempotent by workflow id + run id."""
        _bind_execution(inp.execution_id)
        info = activity.info()
        result = await self._db(
            self._store.compensate,
            execution_id=inp.execution_id,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            status=inp.status,
            error=inp.error,
            reason=inp.reason,
        )
        if result.created:
            self._metrics.dead_letters.inc()
            self._metrics.executions_finished.labels(inp.status).inc()
        # Also when an earlier attempt committed the record and died (an ambiguous commit) before
        # raising the alert: the incident (the dead letter) makes a second offer a no-op.
        await self._alert(
            AlertEvent(
                "dead_letter",
                f"execution {inp.execution_id} {inp.status}: {inp.reason}",
                severity="high",
                execution_id=inp.execution_id,
                error=inp.error,
                data={"dead_letter_id": result.dead_letter_id},
                incident=result.dead_letter_id,
            )
        )
        log.info(
            "execution.compensated",
            execution_id=inp.execution_id,
            status=inp.status,
            dead_letter_id=result.dead_letter_id,
            created=result.created,
            attempt=info.attempt,
        )
        return result.dead_letter_id

    @activity.defn(name=SKIP_TASK_ACTIVITY)
    async def skip_task(self, inp: SkipTaskInput) -> None:
        _bind_execution(inp.execution_id)
        await self._db(self._store.skip_task, inp.execution_id, inp.task, inp.output)
        log.info("task.skipped", execution_id=inp.execution_id, task=inp.task)

    @activity.defn(name=RECORD_FEEDBACK_ACTIVITY)
    async def record_feedback(self, inp: FeedbackInput) -> None:
        """A person's decision on a task's output: approved, the task completes; rejected, the
        feedback is kept for the task's next run."""
        _bind_execution(inp.execution_id)
        await self._db(
            self._store.decide_feedback,
            inp.execution_id,
            inp.task,
            revision=inp.revision,
            approve=inp.approve,
            feedback=inp.feedback,
        )
        log.info("task.feedback", execution_id=inp.execution_id, task=inp.task, approve=inp.approve)

    @activity.defn(name=RUN_TASK_ACTIVITY)
    async def run_crew_task(self, inp: RunTaskInput) -> TaskResult:
        info = activity.info()
        # Every log line of this attempt, crewrun's, Temporal's and CrewAI's own (its thread runs
        # in a copy of this context), carries where it comes from. Not reset on exit: each
        # activity runs in an asyncio task of its own, and the SDK's "completing as failed" line
        # comes after this coroutine ends.
        structlog.contextvars.bind_contextvars(
            execution_id=inp.execution_id,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            task=inp.task.get("name"),
            agent=inp.agent.get("name"),
            attempt=task_attempt(inp, info),
        )
        return await self._run_crew_task(inp, info)

    async def _run_crew_task(self, inp: RunTaskInput, info: activity.Info) -> TaskResult:
        # Per-category failure counts, the error history and the LLM of the chain, from the
        # attempts before this one (heartbeat details).
        state = AttemptState.from_details(info.heartbeat_details)
        progress = _Progress()
        # Everything that can fail, the database included (a full disk, an outage), and a payload
        # that does not validate, leaves through the boundary: classified, counted.
        try:
            task, progress.agent = TaskSpec.model_validate(inp.task), AgentSpec.model_validate(inp.agent)
            row, reused, ended = await self._heartbeating(
                functools.partial(self._attempt, inp, task, info, state, progress), state
            )
        except Exception as exc:
            failure = await self._fail(exc, inp, state, info, progress)
            if progress.started is not None:
                self._metrics.task_duration.labels("failed").observe(time.monotonic() - progress.started)
            await self._count_calls(inp, progress.begun)
            raise failure.error from None
        await self._count_calls(inp, progress.begun)
        if reused:
            # An earlier attempt committed the output and died before reporting it: reused.
            log.info("task.output_reused")
            await asyncio.to_thread(self._write_output_file, inp.execution_id, row)
            return _result(row, reused=True)
        self._metrics.task_duration.labels("completed").observe(time.monotonic() - (progress.started or 0))
        if ended and inp.finish_execution is not None:
            self._metrics.executions_finished.labels(inp.finish_execution.status).inc()
        log.info("task.completed", chars=len(row.output or ""))
        return _result(row)

    def _attempt(
        self, inp: RunTaskInput, task: TaskSpec, info: activity.Info, state: AttemptState, progress: _Progress
    ) -> tuple[TaskRun, bool, bool]:
        """The attempt on its task thread, in one hop from the event loop (under load every hop
        waits for the GIL): the first transaction, the crew's run, the last transaction, the
        task's output file. Returns (the task's row, reused, whether this ended the execution)."""
        assert progress.agent is not None
        progress.begun = begun = self._records.begin(
            inp, task, progress.agent, task_attempt(inp, info), info.started_time, state
        )
        if begun.reused is not None:
            return begun.reused, True, False
        assert begun.request is not None and begun.calls is not None
        progress.started = time.monotonic()
        outcome = self._runner.run(begun.request)
        row, ended = self._records.completed(inp, task_attempt(inp, info), begun.calls, outcome)
        self._write_output_file(inp.execution_id, row)
        return row, False, ended

    async def _count_calls(self, inp: RunTaskInput, begun: Begun | None) -> None:
        """The attempt's live LLM usage and the calls the journal saved it, as metrics; and, when
        it paid for calls and a spend rule is configured, the spend alerts."""
        journal = begun.calls.journal if begun is not None and begun.calls is not None else None
        if journal is None:
            return
        stats = journal.stats
        for (model, direction), tokens in stats.tokens.items():
            self._metrics.llm_tokens.labels(model, direction).inc(tokens)
        for model, usd in stats.cost.items():
            self._metrics.llm_cost.labels(model).inc(usd)
        for kind, count in stats.replayed.items():
            self._metrics.calls_replayed.labels(kind).inc(count)
        if stats.cost and self._alerter is not None and self._alerter.wants("spend"):
            cost = await self._db(self._store.execution_cost, inp.execution_id)
            await self._alert(
                AlertEvent(
                    "spend",
                    f"execution {inp.execution_id} of {inp.crew_name} has cost {cost:.4f} USD",
                    severity="medium",
                    execution_id=inp.execution_id,
                    data={"execution_cost_usd": cost},
                    # An execution crosses a spend threshold once: one alert, whichever attempt.
                    incident=f"spend:{inp.execution_id}",
                )
            )

    def _write_output_file(self, execution_id: str, row: TaskRun) -> None:
        """The task's output_file, by the attempt that completed it (or the one that found its
        output committed by an attempt that died before writing it): the same content each time."""
        relative = (row.output_data or {}).get("output_file")
        if not relative or self._outputs_dir is None:
            return
        from activities.task_outputs import write_output_file  # imports crewai: only when needed

        data = row.output_data or {}
        saved = StoredOutput(row.output or "", data.get("json_dict"), str(data.get("format") or "raw"))
        write_output_file(self._outputs_dir / execution_id, relative, saved)

    async def _alert(self, event: AlertEvent) -> None:
        await raise_alert(self._alerter, event, self._alert_max_interval_s)

    async def _fail(
        self, exc: Exception, inp: RunTaskInput, state: AttemptState, info: activity.Info, progress: _Progress
    ) -> Failure:
        """Classify; record the error event, the task's status and the breaker's outcomes in one
        transaction; alert; carry the counts over to the next attempt."""
        begun, chain = progress.begun, progress.agent.chain if progress.agent else []
        llm = (
            begun.llm
            if begun and begun.llm
            else (chain[min(state.llm_index, len(chain) - 1)] if chain else None)
        )
        calls: AttemptCalls | None = begun.calls if begun else None
        failed_call = exc.call if isinstance(exc, CallFailed) else None
        failure = self._boundary.failure(
            exc,
            state=state,
            table=retry_policy.from_json(inp.retry) if inp.retry else dict(retry_policy.DEFAULT_POLICIES),
            context=AttemptContext(
                task=inp.task.get("name", "?"),
                agent=inp.agent.get("name", "?"),
                service=llm.service_name if llm else "unknown",
                attempt=task_attempt(inp, info),
                started_at=info.started_time,
            ),
            fallback=chain[state.llm_index + 1].model if state.llm_index + 1 < len(chain) else None,
        )
        record = failure.record
        self._metrics.errors.labels(record.category, record.code, record.severity, record.service).inc()
        if not failure.final:
            self._metrics.retries.labels(record.category).inc()
        try:
            opened = await self._db(
                self._records.failed,
                inp,
                record,
                final=failure.final,
                calls=calls,
                failed_call=failed_call,
                message=failure.error.message,
            )
        except Exception as db_error:
            # The database is what fails (full, down): the event rides in the heartbeat details
            # and the next attempt writes it. The failure itself still leaves classified.
            state.keep_unrecorded(record)
            opened = []
            log.error(
                "task.failure_unrecorded",
                code=record.code,
                db_error=redact_message(f"{type(db_error).__name__}: {db_error}")[:300],
            )
        (log.error if failure.final else log.warning)(
            "task.attempt_failed",
            code=record.code,
            category=record.category,
            severity=record.severity,
            final=failure.final,
            tool=record.tool,
            next_retry_delay_s=record.next_retry_delay_s,
        )
        await self._alert(
            AlertEvent(
                "error",
                f"[{record.code}] task {record.task} of {inp.crew_name}",
                severity=record.severity,
                execution_id=inp.execution_id,
                error=record.to_dict(),
            )
        )
        for service in opened:
            await self._alert(
                AlertEvent("circuit_opened", f"circuit of {service} opened", severity="high", service=service)
            )
        # Heartbeat details outlive this attempt: the next one continues these counts.
        activity.heartbeat(state.to_details())
        if record.code in PROCESS_EXHAUSTION_CODES and self._on_exhausted is not None:
            self._on_exhausted(record.code)
        return failure

    async def _heartbeating(self, call: Callable[[], T], state: AttemptState) -> T:
        """Run the blocking attempt in the task pool, heartbeating until it returns. Each
        heartbeat carries the attempt state, so a worker crash does not lose the counts."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, contextvars.copy_context().run, call)
        timeout = activity.info().heartbeat_timeout
        interval = max(0.2, timeout.total_seconds() / 3) if timeout else 10.0
        while True:
            done, _ = await asyncio.wait({future}, timeout=interval)
            if done:
                return future.result()
            activity.heartbeat(state.to_details())


@dataclass
class _Progress:
    """How far an attempt got, for its failure path."""

    agent: AgentSpec | None = None
    begun: Begun | None = None
    started: float | None = None  # when the crew began to run


def _result(row: TaskRun, reused: bool = False) -> TaskResult:
    output = row.output or ""
    return TaskResult(
        task=row.name,
        attempts=row.attempts,
        output_preview=output[:OUTPUT_PREVIEW_CHARS],
        output_chars=len(output),
        model=row.model,
        reused=reused,
        awaiting_feedback=row.status == TaskStatus.AWAITING_FEEDBACK,
    )


def task_attempt(inp: RunTaskInput, info: activity.Info) -> int:
    """The attempt's number among all of the task's attempts: a task resumed after a pause (or run
    again after a rejection) is a new activity whose attempts Temporal counts from 1 again."""
    return inp.attempt_offset + info.attempt


def _bind_execution(execution_id: str) -> None:
    info = activity.info()
    structlog.contextvars.bind_contextvars(
        execution_id=execution_id, workflow_id=info.workflow_id, run_id=info.workflow_run_id
    )
