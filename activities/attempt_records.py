"""The two transactions of a crew task attempt, with the circuit breaker's decisions in them.

``begin``: the error events earlier attempts could not write, the attempt's claim (or the output an
earlier attempt committed), the execution's ``running`` status when the workflow says so, the log
line, the context the task sees, and the breaker permit of the first LLM of the agent's chain that
may be called. ``completed`` / ``failed``: the output or the error event, the task's status, the
log line and the breaker's record of every service the attempt called. Two commits per attempt,
whatever the outcome (a call to another service, a tool's, adds a read of its breaker the first
time the attempt calls it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from activities.attempt_calls import AttemptCalls, CallInfo
from activities.boundary import AttemptState
from activities.call_journal import AttemptJournal, JournalLimits
from activities.runner_contract import Feedback, StoredOutput, TaskRunOutcome, TaskRunRequest
from backend.breaker import CircuitBreaker, Permit
from backend.db import attempts, executions, journal
from backend.db.database import Database
from backend.db.executions import LogLine
from backend.db.models import TaskRun
from backend.exceptions.execution_errors import CircuitOpenError
from backend.exceptions.records import ErrorRecord
from backend.pricing import PriceTable
from backend.specs import AgentSpec, LLMSpec, TaskSpec
from workflows.contracts import RunTaskInput


@dataclass
class Begun:
    request: TaskRunRequest | None = None  # None: ``reused`` holds the task's committed output
    llm: LLMSpec | None = None  # the LLM of the chain this attempt calls
    reused: TaskRun | None = None
    calls: AttemptCalls | None = None


@dataclass(frozen=True)
class JournalConfig:
    """The deployment's call journal settings (None in AttemptRecords: no journal)."""

    replay: bool = True
    limits: JournalLimits = JournalLimits()
    prices: PriceTable = PriceTable()


class AttemptRecords:
    def __init__(
        self, db: Database, breaker: CircuitBreaker, journal_config: JournalConfig | None = None
    ) -> None:
        self._db = db
        self._breaker = breaker
        self._journal = journal_config

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
        task = task_spec.name
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
                revision=inp.revision,
            )
            if start.reused:
                return Begun(reused=start.task)
            permit, index, refused = self._first_permitted(s, agent.chain, state.llm_index)
            tape = journal.tape(s, inp.execution_id, task, inp.revision, attempt) if self._journal else None
        state.unrecorded.clear()  # committed
        if refused is not None:
            raise refused
        calls = AttemptCalls(breaker=self._breaker)
        if self._journal is not None and tape is not None:
            calls.journal = AttemptJournal(
                self._db,
                execution_id=inp.execution_id,
                task=task,
                revision=inp.revision,
                attempt=attempt,
                tape=tape,
                replay=self._journal.replay and inp.replay,
                prices=self._journal.prices,
                limits=self._journal.limits,
            )
        if permit is not None:
            calls.seed(permit)
        llm = agent.chain[index]
        request = TaskRunRequest(
            agent=agent.model_copy(update={"llm": llm}),
            task=task_spec,
            inputs=inp.inputs,
            context={
                name: StoredOutput(found.raw, *_structured(found.data))
                for name in inp.context
                if (found := start.context.get(name)) is not None
            },
            source=inp.source,
            crew_name=inp.crew_name,
            task_index=inp.task_index,
            llm_index=index,
            execution_id=inp.execution_id,
            feedback=[
                Feedback(str(f.get("output", "")), str(f.get("feedback", "")))
                for f in (start.task.feedback or [] if start.task is not None else [])
                if not f.get("approved")
            ],
            calls=calls,
        )
        return Begun(request, llm, calls=calls)

    def _first_permitted(
        self, s: Any, chain: list[LLMSpec], start: int
    ) -> tuple[Permit | None, int, CircuitOpenError | None]:
        """The first LLM of the chain (from the current one on) whose breaker lets a call through,
        by its index; else the first refusal, which says when the next probe may run."""
        first = min(start, len(chain) - 1)
        first_refusal: CircuitOpenError | None = None
        for index in range(first, len(chain)):
            try:
                return self._breaker.acquire_in(s, chain[index].service_name), index, None
            except CircuitOpenError as refused:
                first_refusal = first_refusal or refused
        return None, first, first_refusal

    def completed(
        self, inp: RunTaskInput, attempt: int, calls: AttemptCalls, outcome: TaskRunOutcome
    ) -> tuple[TaskRun, bool]:
        """The output (and, for the last task, the execution's end); True when this call ended
        the execution (a retry after an ambiguous commit finds it ended already)."""
        human = bool(inp.task.get("human_input"))
        with self._db.transaction("finish_attempt.completed") as s:
            row = attempts.complete(
                s,
                inp.execution_id,
                inp.task["name"],
                output=outcome.output,
                model=outcome.model,
                attempt=attempt,
                data=output_data(outcome),
                awaiting_feedback=human,
                calls=asdict(calls.counts),
            )
            for permit, category in calls.outcomes():
                self._breaker.record_in(s, permit, category)
            ended = False
            if inp.finish_execution is not None and not human:
                end = inp.finish_execution
                line = LogLine(f"execution.{end.status}", end.message)
                ended = executions.transition(s, inp.execution_id, end.status, log=line).changed
        return row, ended

    def failed(
        self,
        inp: RunTaskInput,
        record: ErrorRecord,
        *,
        final: bool,
        calls: AttemptCalls | None,
        failed_call: CallInfo | None,
        message: str,
    ) -> list[str]:
        """The error event (the task's final status too when no attempt follows: the workflow
        decided which, ``on_final_failure``) and the breaker's record of the attempt's calls.
        Returns the services whose breaker this failure opened."""
        paused = final and record.pauses(inp.on_final_failure.pause)
        data = {
            "code": record.code,
            "category": record.category,
            "severity": record.severity,
            "attempt": record.attempt,
            "next_retry_delay_s": record.next_retry_delay_s,
        }
        if record.tool:
            data["tool"] = record.tool
        line = LogLine(
            "task.attempt_failed", message, "error" if final else "warning", data, inp.task["name"]
        )
        outcomes = calls.outcomes(failed_call, record.category) if calls is not None else []
        with self._db.transaction("finish_attempt.failed") as s:
            fresh = attempts.record_failure(
                s,
                inp.execution_id,
                inp.task["name"],
                record=record,
                final=final and not paused,
                final_status=inp.on_final_failure.otherwise,
                log=line,
            )
            if fresh and record.attempt is not None:  # once per attempt, also after an ambiguous commit
                journal.count_wasted(s, inp.execution_id, inp.task["name"], inp.revision, record.attempt)
            return [
                permit.service
                for permit, category in outcomes
                if self._breaker.record_in(s, permit, category)
            ]


def output_data(outcome: TaskRunOutcome) -> dict[str, Any] | None:
    """What the task row keeps besides the text: the structured output, the output file."""
    data: dict[str, Any] = {}
    if outcome.json_dict is not None:
        data |= {"format": outcome.format, "json_dict": outcome.json_dict}
    if outcome.output_file:
        data["output_file"] = outcome.output_file
    return data or None


def _structured(data: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    if data and data.get("json_dict") is not None:
        return data["json_dict"], str(data.get("format") or "json")
    return None, "raw"
