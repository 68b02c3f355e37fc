"""The two transactions of a crew task attempt, with the circuit breaker's decisions in them.

``begin``: the error events earlier attempts could not write, the attempt's claim (or the output an
earlier attempt committed), the execution's ``running`` status when the workflow says so, the log
line, the context the task sees, and the breaker permit of the first LLM of the agent's chain that
may be called. ``completed`` / ``failed``: the output or the error event, the task's status, the
log line and the breaker's record of the call. Two commits per attempt, whatever the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from activities.boundary import AttemptState
from activities.runner_contract import TaskRunOutcome, TaskRunRequest
from backend.breaker import CircuitBreaker, Permit
from backend.db import attempts, executions
from backend.db.database import Database
from backend.db.executions import LogLine
from backend.db.models import TaskRun
from backend.exceptions.execution_errors import CircuitOpenError
from backend.exceptions.records import ErrorRecord
from backend.specs import AgentSpec, LLMSpec, TaskSpec
from workflows.contracts import RunTaskInput


@dataclass
class Begun:
    request: TaskRunRequest | None = None  # None: ``reused`` holds the task's committed output
    permit: Permit | None = None
    llm: LLMSpec | None = None  # the LLM of the chain this attempt calls
    reused: TaskRun | None = None


class AttemptRecords:
    def __init__(self, db: Database, breaker: CircuitBreaker) -> None:
        self._db = db
        self._breaker = breaker

    def begin(
        self,
        inp: RunTaskInput,
        task_spec: TaskSpec,
        agent: AgentSpec,
        attempt: int,
        started_at: datetime,
        state: AttemptState,
    ) -> Begun:
        """Raises CircuitOpenError (after committing the claim) when no LLM of the chain may be
        called now: the boundary turns it into a wait until the next probe."""
        task = inp.task["name"]
        with self._db.transaction("begin_attempt") as s:
            for pending in state.unrecorded:
                record = ErrorRecord.from_dict(pending)
                line = LogLine("task.attempt_failed", record.message[:300], "warning", task=task)
                attempts.record_failure(s, inp.execution_id, task, record=record, final=False, log=line)
            start = attempts.begin(
                s,
                inp.execution_id,
                task,
                attempt,
                context_of=inp.context,
                started_at=started_at,
                mark_running=inp.mark_running,
            )
            if start.reused:
                return Begun(reused=start.task)
            permit, llm, refused = self._first_permitted(s, agent.chain, state.llm_index)
        state.unrecorded.clear()  # committed
        if refused is not None:
            raise refused
        request = TaskRunRequest(
            agent=agent.model_copy(update={"llm": llm}),
            task=task_spec,
            inputs=inp.inputs,
            context={n: start.context[n] for n in inp.context if n in start.context},
        )
        return Begun(request, permit, llm)

    def _first_permitted(
        self, s: Any, chain: list[LLMSpec], start: int
    ) -> tuple[Permit | None, LLMSpec, CircuitOpenError | None]:
        """The first LLM of the chain (from the current one on) whose breaker lets a call through;
        else the first refusal, which says when the next probe may run."""
        candidates = chain[start:] or chain[-1:]
        first_refusal: CircuitOpenError | None = None
        for llm in candidates:
            try:
                return self._breaker.acquire_in(s, llm.service_name), llm, None
            except CircuitOpenError as refused:
                first_refusal = first_refusal or refused
        return None, candidates[0], first_refusal

    def completed(
        self, inp: RunTaskInput, attempt: int, permit: Permit | None, outcome: TaskRunOutcome
    ) -> tuple[TaskRun, bool]:
        """The output (and, for the last task, the execution's end); True when this call ended
        the execution (a retry after an ambiguous commit finds it ended already)."""
        with self._db.transaction("finish_attempt.completed") as s:
            row = attempts.complete(
                s,
                inp.execution_id,
                inp.task["name"],
                output=outcome.output,
                model=outcome.model,
                attempt=attempt,
            )
            if permit is not None:
                self._breaker.record_in(s, permit, None)
            ended = False
            if inp.finish_execution is not None:
                end = inp.finish_execution
                line = LogLine(f"execution.{end.status}", end.message)
                ended = executions.transition(s, inp.execution_id, end.status, log=line).changed
        return row, ended

    def failed(
        self, inp: RunTaskInput, record: ErrorRecord, *, final: bool, permit: Permit | None, message: str
    ) -> bool:
        """The error event (the task's final status too when no attempt follows: the workflow
        decided which, ``on_final_failure``) and the breaker's record of the call. Returns True
        when this failure opened the service's breaker."""
        paused = final and record.category in inp.on_final_failure.pause
        data = {
            "code": record.code,
            "category": record.category,
            "severity": record.severity,
            "attempt": record.attempt,
            "next_retry_delay_s": record.next_retry_delay_s,
        }
        line = LogLine(
            "task.attempt_failed", message, "error" if final else "warning", data, inp.task["name"]
        )
        with self._db.transaction("finish_attempt.failed") as s:
            attempts.record_failure(
                s,
                inp.execution_id,
                inp.task["name"],
                record=record,
                final=final and not paused,
                final_status=inp.on_final_failure.otherwise,
                log=line,
            )
            return permit is not None and self._breaker.record_in(s, permit, record.category)
