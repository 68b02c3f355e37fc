"""CrewExecutionWorkflow: one crew execution, one activity per crew task.

Tasks run in the crew's order; consecutive ``async_execution`` tasks run as concurrent activities,
joined before the next synchronous task, as CrewAI runs them. A hierarchical crew's tasks run the
same way (its manager delegates inside each task's activity). A ``human_input`` task's output
waits for a person: approved, the crew goes on; rejected, the task runs again with the feedback.

The checkpoint is the list of completed tasks in this workflow's state (rebuilt from history on
replay) plus their outputs in the backend DB: after a worker crash or a server restart the
workflow continues after the last completed task and never runs a finished task again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from backend.exceptions import retry_policy
    from backend.exceptions.records import ErrorRecord
    from backend.specs import AgentSpec, CrewSpec, TaskSpec
    from backend.status import ExecutionStatus, TaskStatus
    from workflows import failures, policies
    from workflows.contracts import (
        COMPENSATE_ACTIVITY,
        RECORD_FEEDBACK_ACTIVITY,
        RECORD_STATUS_ACTIVITY,
        RUN_TASK_ACTIVITY,
        SKIP_TASK_ACTIVITY,
        WORKFLOW_NAME,
        AbortRequest,
        CompensationInput,
        CrewExecutionInput,
        CrewExecutionResult,
        FeedbackInput,
        FeedbackRequest,
        FinalFailure,
        FinishExecution,
        ResumeRequest,
        RunTaskInput,
        SkipRequest,
        SkipTaskInput,
        StatusUpdate,
        TaskProgress,
        TaskResult,
    )

STATUS_KEY = SearchAttributeKey.for_keyword("CrewExecutionStatus")
CATEGORY_KEY = SearchAttributeKey.for_keyword("CrewErrorCategory")
CODE_KEY = SearchAttributeKey.for_keyword("CrewErrorCode")
CREW_KEY = SearchAttributeKey.for_keyword("CrewName")
# workflow.patched markers: each names a change of the commands this workflow issues.
STATUS_WITH_FIRST_TASK = "status-with-first-task"
STATUS_WITH_LAST_TASK = "status-with-last-task"


def _finish(gaps: list[str]) -> FinishExecution:
    """How the execution ends when its last task completes."""
    status = ExecutionStatus.DEGRADED if gaps else ExecutionStatus.COMPLETED
    return FinishExecution(status, f"execution {status}" + (f"; gaps: {', '.join(gaps)}" if gaps else ""))


@dataclass
class _Decision:
    """What an operator decided about a paused task, or a person about a task's output."""

    kind: str  # resume | skip | abort | feedback | timeout
    resume: ResumeRequest | None = None
    skip: SkipRequest | None = None
    abort: AbortRequest | None = None
    feedback: FeedbackRequest | None = None


class _TaskFailed(Exception):
    """A task ended for good: the execution fails (after compensation)."""

    def __init__(self, status: str, reason: str, error: ErrorRecord) -> None:
        super().__init__(reason)
        self.status, self.reason, self.error = status, reason, error


def _groups(tasks: list[TaskSpec]) -> list[list[int]]:
    """Task indexes in the order they run: a synchronous task alone, consecutive async tasks
    together."""
    groups: list[list[int]] = []
    for index, task in enumerate(tasks):
        if task.async_execution and groups and tasks[groups[-1][-1]].async_execution:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


@workflow.defn(name=WORKFLOW_NAME)
class CrewExecutionWorkflow:
    def __init__(self) -> None:
        self._tasks: list[TaskProgress] = []
        self._status: str = ExecutionStatus.PENDING
        self._paused_task: str | None = None
        self._decision: _Decision | None = None
        self._task_names: set[str] = set()
        self._running_pending = False  # the first task attempt still has to mark the execution running
        self._awaiting_task: str | None = None  # a human_input task whose output waits for a person
        self._awaiting_revision = 0  # ... and the revision of that output
        # Concurrent async tasks take turns to pause or wait for feedback: one question at a time.
        self._intervention = asyncio.Lock()

    # ----- queries -----

    @workflow.query(name="progress")
    def progress(self) -> list[TaskProgress]:
        return self._tasks

    @workflow.query(name="status")
    def status(self) -> str:
        return self._status

    # ----- operator interventions: signals (CLI, Web UI) and validated updates (the API) -----

    @workflow.signal(name="resume")
    def resume(self, request: ResumeRequest) -> None:
        if self._paused_task and request.task in (None, self._paused_task):
            self._decision = _Decision("resume", resume=request)
        else:
            workflow.logger.warning("resume signal ignored: not paused on %s", request.task)

    @workflow.signal(name="skip")
    def skip(self, request: SkipRequest) -> None:
        if self._paused_task and request.task == self._paused_task:
            self._decision = _Decision("skip", skip=request)
        else:
            workflow.logger.warning("skip signal ignored: not paused on %s", request.task)

    @workflow.signal(name="abort")
    def abort(self, request: AbortRequest) -> None:
        if self._paused_task:
            self._decision = _Decision("abort", abort=request)
        else:
            workflow.logger.warning("abort signal ignored: not paused")

    @workflow.signal(name="feedback")
    def feedback(self, request: FeedbackRequest) -> None:
        stale = request.revision is not None and request.revision != self._awaiting_revision
        if self._awaiting_task is not None and request.task == self._awaiting_task and not stale:
            self._decision = _Decision("feedback", feedback=request)
        else:
            workflow.logger.warning(
                "feedback signal ignored: not awaiting feedback on %s revision %s",
                request.task,
                request.revision,
            )

    @workflow.update(name="submit_feedback")
    def feedback_update(self, request: FeedbackRequest) -> str:
        self.feedback(request)
        return request.task

    @feedback_update.validator
    def _validate_feedback(self, request: FeedbackRequest) -> None:
        if self._awaiting_task is None or self._decision is not None:
            raise ApplicationError(
                f"execution is {self._status}, not awaiting feedback", type="EXECUTION_NOT_AWAITING_FEEDBACK"
            )
        if request.task != self._awaiting_task:
            raise ApplicationError(
                f"awaiting feedback on task {self._awaiting_task!r}, not {request.task!r}",
                type="EXECUTION_NOT_AWAITING_FEEDBACK",
            )
        if request.revision is not None and request.revision != self._awaiting_revision:
            raise ApplicationError(
                f"task {request.task!r} awaits feedback on revision {self._awaiting_revision}, "
                f"not {request.revision}",
                type="FEEDBACK_REVISION_STALE",
            )

    @workflow.update(name="resume_execution")
    def resume_update(self, request: ResumeRequest) -> str:
        self.resume(request)
        return self._paused_task or ""

    @resume_update.validator
    def _validate_resume(self, request: ResumeRequest) -> None:
        self._require_paused(request.task)

    @workflow.update(name="skip_task")
    def skip_update(self, request: SkipRequest) -> str:
        self.skip(request)
        return request.task

    @skip_update.validator
    def _validate_skip(self, request: SkipRequest) -> None:
        if request.task not in self._task_names:
            raise ApplicationError(f"no task {request.task!r}", type="TASK_UNKNOWN")
        self._require_paused(request.task)

    def _require_paused(self, task: str | None) -> None:
        if self._paused_task is None or self._decision is not None:
            raise ApplicationError(f"execution is {self._status}, not paused", type="EXECUTION_NOT_PAUSED")
        if task is not None and task != self._paused_task:
            raise ApplicationError(
                f"paused on task {self._paused_task!r}, not {task!r}", type="EXECUTION_NOT_PAUSED"
            )

    # ----- the run -----

    @workflow.run
    async def run(self, inp: CrewExecutionInput) -> CrewExecutionResult:
        try:
            return await self._run(inp)
        except _TaskFailed as failed:
            await self._end_badly(inp, failed.status, failed.reason, failed.error)
            error = failed.error
            raise ApplicationError(
                f"[{error.code}] {failed.reason}: {error.message[:300]}",
                error.to_dict(),
                type=error.category,
                non_retryable=True,
            ) from None
        except ApplicationError:
            raise
        except asyncio.CancelledError:
            # Wherever the cancellation landed (a task attempt, a status record, a pause), the
            # execution ends cancelled with its compensation record, once.
            await self._end_badly(inp, ExecutionStatus.CANCELLED, "execution cancelled", None)
            raise
        except Exception as err:
            if is_cancelled_exception(err):  # an activity cancelled along with the workflow
                await self._end_badly(inp, ExecutionStatus.CANCELLED, "execution cancelled", None)
                raise asyncio.CancelledError() from err
            # A bug in workflow code (or an input it cannot handle, a spec that does not
            # validate) fails the execution with a code and a record, instead of retrying the
            # workflow task forever.
            error = failures.workflow_code_error(err)
            await self._end_badly(inp, ExecutionStatus.FAILED, "workflow code error", error)
            raise ApplicationError(
                error.message, error.to_dict(), type=error.category, non_retryable=True
            ) from err

    async def _run(self, inp: CrewExecutionInput) -> CrewExecutionResult:
        # The spec travels as JSON; here it is typed (a spec that does not validate is a
        # workflow code error, see run()).
        spec = CrewSpec.model_validate(inp.spec)
        agents = {a.name: a for a in spec.agents}
        inputs = dict(inp.inputs)
        self._tasks = [TaskProgress(name=t.name, agent=t.agent) for t in spec.tasks]
        self._task_names = {t.name for t in spec.tasks}
        workflow.upsert_search_attributes([CREW_KEY.value_set(inp.crew_name)])
        # Since STATUS_WITH_FIRST_TASK, the first task's first transaction marks the execution
        # running (one activity less per execution); histories from before replay the activity.
        self._running_pending = workflow.patched(STATUS_WITH_FIRST_TASK)
        if self._running_pending:
            self._show_status(ExecutionStatus.RUNNING, None)
        else:
            await self._set_status(inp, ExecutionStatus.RUNNING, "execution started")

        gaps: list[str] = []
        # Since STATUS_WITH_LAST_TASK, the last task's output and the execution's end are one
        # transaction (one activity less again); a last task that does not complete, or one
        # seeded from a dead letter, leaves the end to the status activity as before.
        end_with_last_task = workflow.patched(STATUS_WITH_LAST_TASK)
        ended = False
        for group in _groups(spec.tasks):
            if len(group) == 1:
                ended = await self._run_one(inp, spec, group[0], agents, inputs, gaps, end_with_last_task)
            else:  # consecutive async tasks: concurrently, all joined before the next one
                await asyncio.gather(
                    *(self._run_one(inp, spec, i, agents, inputs, gaps, end_with_last_task) for i in group)
                )

        end = _finish(gaps)
        final, message = end.status, end.message
        if ended:
            self._show_status(final, None)
            return CrewExecutionResult(inp.execution_id, self._status, self._tasks, gaps=gaps)
        try:
            await self._set_status(inp, final, message, None)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            # Every task had finished when the cancellation arrived: too late to cancel anything.
            # The outcome is recorded (a new activity; the cancellation was delivered once) and
            # the execution completes, so the DB and Temporal agree on it.
            await self._set_status(inp, final, message, None)
        return CrewExecutionResult(inp.execution_id, self._status, self._tasks, gaps=gaps)

    async def _run_one(
        self,
        inp: CrewExecutionInput,
        spec: CrewSpec,
        index: int,
        agents: dict[str, AgentSpec],
        inputs: dict[str, Any],
        gaps: list[str],
        end_with_last_task: bool,
    ) -> bool:
        """One task, until it completes (approved, for a human_input task), is skipped or
        degraded, or the run fails. Returns True when its completion ended the execution."""
        task = spec.tasks[index]
        progress = self._tasks[index]
        if task.name in inp.seeded:
            # Completed in an earlier run (a dead letter's checkpoint): never run again.
            progress.status = TaskStatus.COMPLETED
            return False
        names = [t.name for t in spec.tasks]
        context = names[:index] if task.context is None else list(task.context)
        revision = 0
        while True:  # until the task completes, is skipped or degraded, or the run fails
            last = index == len(spec.tasks) - 1
            finish = _finish(gaps) if end_with_last_task and last else None
            try:
                result = await self._run_task(
                    inp, spec, task, agents[task.agent], inputs, progress, context, finish, index, revision
                )
            except asyncio.CancelledError:
                progress.status = TaskStatus.FAILED
                raise
            except ActivityError as err:
                if is_cancelled_exception(err):
                    progress.status = TaskStatus.FAILED
                    raise asyncio.CancelledError() from err
                async with self._intervention:
                    outcome = await self._after_failure(inp, task, agents, inputs, progress, err)
                if outcome == "retry":
                    continue
                gaps.append(task.name)  # skipped or degraded: the crew goes on without it
                return False
            progress.attempts = result.attempts
            progress.output = result.output_preview
            if result.awaiting_feedback:
                async with self._intervention:
                    approved = await self._await_feedback(inp, task, progress, result, revision)
                if not approved:
                    revision += 1  # rejected: the task runs again with the feedback
                    continue
            progress.status = TaskStatus.COMPLETED
            progress.finished_at = workflow.now().isoformat()
            return finish is not None and not result.awaiting_feedback

    async def _await_feedback(
        self,
        inp: CrewExecutionInput,
        task: TaskSpec,
        progress: TaskProgress,
        result: TaskResult,
        revision: int,
    ) -> bool:
        """Wait for a person's decision on a task's output (the timeout leads to the dead
        letter path); record it. Returns True when approved."""
        progress.status = TaskStatus.AWAITING_FEEDBACK
        self._awaiting_task, self._awaiting_revision = task.name, revision
        self._decision = None
        timeout_s = inp.tuning.pause_timeout_s
        workflow.set_current_details(
            failures.feedback_card(task.name, task.agent, result.output_preview, timeout_s)
        )
        await self._set_status(inp, ExecutionStatus.AWAITING_FEEDBACK, f"task {task.name} awaits feedback")
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None, timeout=timedelta(seconds=timeout_s)
            )
        except TimeoutError:
            self._awaiting_task = None
            raise _TaskFailed(
                ExecutionStatus.FAILED,
                f"task {task.name} not reviewed",
                failures.feedback_timeout_error(task.name, task.agent, timeout_s),
            ) from None
        decision = self._decision
        assert decision is not None and decision.feedback is not None
        self._awaiting_task = None
        self._decision = None
        workflow.set_current_details("")
        answer = decision.feedback
        await workflow.execute_activity(
            RECORD_FEEDBACK_ACTIVITY,
            FeedbackInput(inp.execution_id, task.name, revision, answer.approve, answer.feedback),
            **policies.STATUS_ACTIVITY_OPTIONS,
        )
        verdict = "approved" if answer.approve else "rejected"
        await self._set_status(inp, ExecutionStatus.RUNNING, f"task {task.name} {verdict}")
        return answer.approve

    async def _after_failure(
        self,
        inp: CrewExecutionInput,
        task: TaskSpec,
        agents: dict[str, AgentSpec],
        inputs: dict[str, Any],
        progress: TaskProgress,
        err: ActivityError,
    ) -> str:
        """A task failed for good: pause for an operator (then ``retry`` or ``skipped``), leave a gap
        (``degraded``), or raise _TaskFailed."""
        error = failures.activity_error_record(err, task.name, task.agent)
        progress.error = error.to_dict()
        progress.attempts = int(error.attempt or progress.attempts)
        if error.pauses(inp.tuning.pause_categories):
            decision = await self._pause(inp, task, error)
            if decision.kind == "resume" and decision.resume is not None:
                inputs.update(decision.resume.inputs_patch)
                if decision.resume.llm_override:
                    agent = agents[task.agent]
                    llm = agent.llm.model_copy(update=decision.resume.llm_override)
                    agents[task.agent] = agent.model_copy(update={"llm": llm})
                await self._set_status(inp, ExecutionStatus.RUNNING, f"resumed task {task.name}")
                return "retry"
            if decision.kind == "skip" and decision.skip is not None:
                await self._skip(inp, decision.skip)
                progress.status = TaskStatus.SKIPPED
                progress.output = decision.skip.output
                await self._set_status(inp, ExecutionStatus.RUNNING, f"skipped task {task.name}")
                return "skipped"
            raise _TaskFailed(
                ExecutionStatus.FAILED,
                f"task {task.name} not recovered",
                self._unrecovered(inp, task, error, decision),
            ) from err
        if not task.critical:
            # An optional task failing for good leaves a gap, not a failed crew.
            progress.status = TaskStatus.DEGRADED
            progress.degraded = True
            return "degraded"
        progress.status = TaskStatus.FAILED
        workflow.set_current_details(failures.error_card(error))
        raise _TaskFailed(ExecutionStatus.FAILED, f"task {task.name} failed", error) from err

    async def _run_task(
        self,
        inp: CrewExecutionInput,
        spec: CrewSpec,
        task: TaskSpec,
        agent: AgentSpec,
        inputs: dict[str, Any],
        progress: TaskProgress,
        context: list[str],
        finish: FinishExecution | None = None,
        index: int = 0,
        revision: int = 0,
    ) -> TaskResult:
        progress.status = TaskStatus.RUNNING
        progress.started_at = workflow.now().isoformat()
        table = policies.task_retry_table(spec, task, inp.tuning)
        # The first task that runs carries the execution's "running" (see _run); once is enough.
        mark_running, self._running_pending = self._running_pending, False
        return await workflow.execute_activity(
            RUN_TASK_ACTIVITY,
            RunTaskInput(
                execution_id=inp.execution_id,
                crew_name=inp.crew_name,
                task=task.model_dump(mode="json"),
                agent=agent.model_dump(mode="json"),
                context=context,
                inputs=inputs,
                retry=retry_policy.to_json(table),
                on_final_failure=FinalFailure(
                    pause=list(inp.tuning.pause_categories),
                    otherwise=TaskStatus.FAILED if task.critical else TaskStatus.DEGRADED,
                ),
                mark_running=mark_running,
                finish_execution=finish,
                source=spec.source,
                task_index=index,
                revision=revision,
                replay=spec.replay,
                attempt_offset=progress.attempts,
            ),
            result_type=TaskResult,
            **policies.task_activity_options(task, agent, inp.tuning, table),
        )

    async def _pause(self, inp: CrewExecutionInput, task: TaskSpec, error: ErrorRecord) -> _Decision:
        """Wait for an operator: resume, skip or abort. The timeout leads to the dead letter path."""
        self._paused_task = task.name
        self._decision = None
        workflow.set_current_details(failures.pause_card(error, inp.tuning.pause_timeout_s))
        await self._set_status(inp, ExecutionStatus.PAUSED, f"paused on {error.code}", error)
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None, timeout=timedelta(seconds=inp.tuning.pause_timeout_s)
            )
        except TimeoutError:
            self._decision = _Decision("timeout")
        decision = self._decision
        assert decision is not None
        self._paused_task = None
        self._decision = None
        workflow.set_current_details("")
        return decision

    def _unrecovered(
        self, inp: CrewExecutionInput, task: TaskSpec, error: ErrorRecord, decision: _Decision
    ) -> ErrorRecord:
        if decision.kind == "abort" and decision.abort is not None:
            return failures.aborted_error(task.name, task.agent, decision.abort.reason, error)
        return failures.pause_timeout_error(task.name, task.agent, error, inp.tuning.pause_timeout_s)

    async def _skip(self, inp: CrewExecutionInput, request: SkipRequest) -> None:
        await workflow.execute_activity(
            SKIP_TASK_ACTIVITY,
            SkipTaskInput(inp.execution_id, request.task, request.output),
            **policies.STATUS_ACTIVITY_OPTIONS,
        )

    async def _end_badly(
        self, inp: CrewExecutionInput, status: str, reason: str, error: ErrorRecord | None
    ) -> None:
        """Failure or cancellation: one compensation activity writes the final status, the final
        error record and the dead letter in one transaction (idempotent per run; retried
        patiently so a database outage delays it, never loses it). After a cancellation the SDK
        still lets the workflow schedule activities, so it runs on that path too."""
        self._show_status(status, error)
        await workflow.execute_activity(
            COMPENSATE_ACTIVITY,
            CompensationInput(inp.execution_id, status, reason, error.to_dict() if error else None),
            **policies.COMPENSATION_ACTIVITY_OPTIONS,
        )

    async def _set_status(
        self, inp: CrewExecutionInput, status: str, message: str, error: ErrorRecord | None = None
    ) -> None:
        self._show_status(status, error)
        await workflow.execute_activity(
            RECORD_STATUS_ACTIVITY,
            StatusUpdate(inp.execution_id, status, message, error.to_dict() if error else None),
            **policies.STATUS_ACTIVITY_OPTIONS,
        )

    def _show_status(self, status: str, error: ErrorRecord | None) -> None:
        """The status (and, on errors, category and code) as search attributes for the Web UI/CLI."""
        self._status = status
        updates = [STATUS_KEY.value_set(status)]
        if error:
            updates += [CATEGORY_KEY.value_set(error.category), CODE_KEY.value_set(error.code)]
        workflow.upsert_search_attributes(updates)
