"""API schemas (the contract of docs/api.md); ORM models stay in backend/db/models.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar, overload
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.breaker import BreakerState
from backend.db import journal
from backend.db.models import (
    Alert,
    Crew,
    DeadLetter,
    ErrorEvent,
    Execution,
    ExecutionLog,
    JournalEntry,
    TaskRun,
)
from backend.db.webhooks import EVENT_TYPES
from backend.settings import Settings
from backend.specs import CrewSpec, LLMOverride, check_storable
from backend.status import ExecutionStatus, TaskStatus

T = TypeVar("T")


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: datetime | None) -> datetime | None: ...
def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything crewrun stores is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class CrewPublic(BaseModel):
    id: str
    name: str
    version: int
    # "spec": a JSON spec registered through the API; "python": a crew in a worker's code, its
    # manifest registered by the worker (``registered_at``: the last time a worker started with it).
    source: str
    spec: CrewSpec
    inputs: list[str]  # the {placeholders} an execution must supply
    created_at: datetime
    registered_at: datetime | None

    @classmethod
    def of(cls, crew: Crew) -> CrewPublic:
        spec = CrewSpec.model_validate(crew.spec)
        return cls(
            id=crew.id,
            name=crew.name,
            version=crew.version,
            source=crew.source,
            spec=spec,
            inputs=sorted(spec.placeholders()),
            created_at=_utc(crew.created_at),
            registered_at=_utc(crew.registered_at),
        )


class WebhookSpec(BaseModel):
    """Where an execution's events are posted (signed with ``secret`` when given)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000)
    events: list[Literal[EVENT_TYPES]] = Field(default_factory=lambda: list(EVENT_TYPES), min_length=1)  # type: ignore[valid-type]
    secret: str | None = Field(default=None, min_length=8, max_length=500)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.hostname
            or parsed.username
            or parsed.password
        ):
            raise ValueError("url must be an http(s) URL with a host and no credentials")
        return value


class ExecutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crew_id: str | None = Field(default=None, max_length=36)
    crew_name: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    crew: CrewSpec | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    webhooks: WebhookSpec | list[WebhookSpec] | None = None

    _storable = field_validator("crew_id", "inputs")(check_storable)

    def webhook_list(self) -> list[WebhookSpec]:
        if self.webhooks is None:
            return []
        return self.webhooks if isinstance(self.webhooks, list) else [self.webhooks]

    @model_validator(mode="after")
    def _one_crew(self) -> ExecutionCreate:
        if len(self.webhook_list()) > 5:
            raise ValueError("at most 5 webhooks per execution")
        given = [x for x in (self.crew_id, self.crew_name, self.crew) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of crew_id, crew_name or crew")
        if self.crew is not None and self.crew.source != "spec":
            raise ValueError("a crew given inline is a JSON spec; Python crews are started by crew_name")
        return self


class FeedbackBody(BaseModel):
    """A person's decision on a human_input task's output."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(max_length=200)
    approve: bool
    feedback: str = Field(default="", max_length=20_000)
    # The task's `revision` as read with the output: a decision on an output since revised is
    # refused (409 FEEDBACK_REVISION_STALE) instead of applied to one the person has not read.
    revision: int | None = Field(default=None, ge=0)

    _storable = field_validator("task", "feedback")(check_storable)


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(default=None, max_length=200)
    inputs_patch: dict[str, Any] = Field(default_factory=dict)
    llm_override: LLMOverride | None = None

    _storable = field_validator("task", "inputs_patch")(check_storable)


class SkipBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(max_length=200)
    output: str | None = Field(default=None, max_length=100_000)

    _storable = field_validator("task", "output")(check_storable)


class CostPublic(BaseModel):
    """What the calls cost, over every attempt: tokens, USD (of models with a known price), and the
    USD of calls whose attempt failed and which no later attempt reused (wasted)."""

    tokens_in: int
    tokens_out: int
    cost_usd: float
    wasted_cost_usd: float

    @classmethod
    def of(cls, tasks: list[TaskRun]) -> CostPublic:
        return cls(**journal.totals(tasks))


class TaskPublic(BaseModel):
    name: str
    agent: str
    status: str
    attempts: int
    output: str | None
    # The structured output (output_pydantic / output_json) as JSON, and its kind.
    json_dict: dict[str, Any] | None
    output_format: str
    output_file: str | None  # relative to the execution's directory of the worker's data dir
    model: str | None
    error: dict[str, Any] | None
    degraded: bool
    revision: int  # human input: rejections so far
    feedback: list[dict[str, Any]]  # human input: every decision, with the output it was about
    cost: CostPublic
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, task: TaskRun, *, with_output: bool) -> TaskPublic:
        data = task.output_data or {}
        return cls(
            name=task.name,
            agent=task.agent,
            status=task.status,
            attempts=task.attempts,
            output=task.output if with_output else None,
            json_dict=data.get("json_dict") if with_output else None,
            output_format=str(data.get("format") or "raw"),
            output_file=data.get("output_file"),
            model=task.model,
            error=task.error,
            degraded=task.degraded,
            revision=task.revision,
            feedback=list(task.feedback or []) if with_output else [],
            cost=CostPublic.of([task]),
            started_at=_utc(task.started_at),
            finished_at=_utc(task.finished_at),
        )


class StepPublic(BaseModel):
    """One LLM or tool call of an execution, as the timeline shows it (never its content)."""

    id: int
    task: str
    attempt: int
    revision: int
    seq: int
    kind: str  # llm | tool
    name: str  # the model, or the tool
    service: str
    started_at: datetime
    duration_ms: float
    tokens_in: int
    tokens_out: int
    cost_usd: float | None  # None: no known price (or a tool call)
    replayed: bool  # served from the journal: no request was made
    outcome: str  # ok | replayed | failed
    error_code: str | None

    @classmethod
    def of(cls, e: JournalEntry) -> StepPublic:
        return cls(
            id=e.id,
            task=e.task,
            attempt=e.attempt,
            revision=e.revision,
            seq=e.seq,
            kind=e.kind,
            name=e.name,
            service=e.service,
            started_at=_utc(e.started_at),
            duration_ms=e.duration_ms,
            tokens_in=e.tokens_in,
            tokens_out=e.tokens_out,
            cost_usd=e.cost_usd,
            replayed=e.outcome == "replayed",
            outcome=e.outcome,
            error_code=e.error_code,
        )


class ResultPublic(BaseModel):
    """A finished crew's result, as CrewAI's ``CrewOutput`` has it: the last task's output (raw and
    structured) and every task's."""

    raw: str
    json_dict: dict[str, Any] | None
    tasks_output: list[dict[str, Any]]

    @classmethod
    def of(cls, e: Execution) -> ResultPublic | None:
        if e.status not in (ExecutionStatus.COMPLETED, ExecutionStatus.DEGRADED):
            return None
        done = [t for t in e.tasks if t.status in (TaskStatus.COMPLETED, TaskStatus.SKIPPED) and t.output]
        outputs = [
            {"name": t.name, "raw": t.output, "json_dict": (t.output_data or {}).get("json_dict")}
            for t in done
        ]
        last = done[-1] if done else None
        json_dict = (last.output_data or {}).get("json_dict") if last is not None else None
        return cls(raw=last.output or "" if last else "", json_dict=json_dict, tasks_output=outputs)


def shown_status(e: Execution) -> str:
    """The workflow decides an execution's status; ``retrying`` is what a running execution
    shows while its current task is on a retry (the task attempts say so, not a separate write)."""
    if e.status == ExecutionStatus.RUNNING and any(t.status == TaskStatus.RETRYING for t in e.tasks):
        return ExecutionStatus.RETRYING
    return e.status


class ExecutionPublic(BaseModel):
    id: str
    crew_id: str | None
    crew_name: str
    status: str
    inputs: dict[str, Any]
    workflow_id: str
    run_id: str | None
    temporal_ui_url: str
    tasks: list[TaskPublic]
    gaps: list[str]  # tasks that left a gap: degraded (optional and failed) or skipped
    result: ResultPublic | None  # once completed or degraded
    cost: CostPublic  # the tasks' totals
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, e: Execution, settings: Settings, *, with_outputs: bool = True) -> ExecutionPublic:
        return cls(
            id=e.id,
            crew_id=e.crew_id,
            crew_name=e.crew_name,
            status=shown_status(e),
            inputs=e.inputs,
            workflow_id=e.workflow_id,
            run_id=e.run_id,
            temporal_ui_url=settings.ui_link(e.workflow_id, e.run_id),
            tasks=[TaskPublic.of(t, with_output=with_outputs) for t in e.tasks],
            gaps=[t.name for t in e.tasks if t.status in ("degraded", "skipped")],
            result=ResultPublic.of(e) if with_outputs else None,
            cost=CostPublic.of(list(e.tasks)),
            error=e.error,
            created_at=_utc(e.created_at),
            started_at=_utc(e.started_at),
            finished_at=_utc(e.finished_at),
        )


class LogEntryPublic(BaseModel):
    id: int
    at: datetime
    level: str
    event: str
    task: str | None
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, entry: ExecutionLog) -> LogEntryPublic:
        return cls(
            id=entry.id,
            at=_utc(entry.at),
            level=entry.level,
            event=entry.event,
            task=entry.task,
            message=entry.message,
            data=entry.data,
        )


class ErrorRecordPublic(BaseModel):
    """One failed attempt (docs/api.md's ErrorRecord): redacted and bounded at the source."""

    id: int
    execution_id: str
    code: str
    category: str
    severity: str
    retryable: bool
    message: str
    service: str | None
    tool: str | None  # the tool whose call failed; null for an LLM call
    task: str
    agent: str
    attempt: int
    category_attempt: int
    max_attempts: int
    fingerprint: str
    exception_type: str
    status_code: int | None
    provider_code: str | None
    retry_after_s: float | None
    next_retry_delay_s: float | None
    stack: str
    cause_chain: list[dict[str, Any]]
    occurred_at: datetime
    attempt_started_at: datetime | None

    @classmethod
    def of(cls, e: ErrorEvent) -> ErrorRecordPublic:
        return cls(
            id=e.id,
            execution_id=e.execution_id,
            code=e.code,
            category=e.category,
            severity=e.severity,
            retryable=e.retryable,
            message=e.message,
            service=e.service,
            tool=e.tool,
            task=e.task,
            agent=e.agent,
            attempt=e.attempt,
            category_attempt=e.category_attempt,
            max_attempts=e.max_attempts,
            fingerprint=e.fingerprint,
            exception_type=e.exception_type,
            status_code=e.status_code,
            provider_code=e.provider_code,
            retry_after_s=e.retry_after_s,
            next_retry_delay_s=e.next_retry_delay_s,
            stack=e.stack,
            cause_chain=list(e.cause_chain),
            occurred_at=_utc(e.occurred_at),
            attempt_started_at=_utc(e.attempt_started_at),
        )


class DeadLetterPublic(BaseModel):
    id: str
    execution_id: str
    crew_id: str | None
    reason: str
    error: dict[str, Any] | None
    completed_tasks: list[dict[str, Any]]
    inputs: dict[str, Any]
    spec_version: int | None
    status: str
    replayed_execution_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, d: DeadLetter) -> DeadLetterPublic:
        return cls(
            id=d.id,
            execution_id=d.execution_id,
            crew_id=d.crew_id,
            reason=d.reason,
            error=d.error,
            completed_tasks=list(d.completed_tasks),
            inputs=d.inputs,
            spec_version=d.spec_version,
            status=d.status,
            replayed_execution_id=d.replayed_execution_id,
            created_at=_utc(d.created_at),
        )


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs_patch: dict[str, Any] = Field(default_factory=dict)

    _storable = field_validator("inputs_patch")(check_storable)


class CircuitBreakerPublic(BaseModel):
    service: str
    state: str
    failure_rate: float
    window_calls: int
    consecutive_failures: int
    opened_at: datetime | None
    next_probe_at: datetime | None

    @classmethod
    def of(cls, b: BreakerState) -> CircuitBreakerPublic:
        def at(t: float | None) -> datetime | None:
            return datetime.fromtimestamp(t, UTC) if t is not None else None

        return cls(
            service=b.service,
            state=b.state,
            failure_rate=b.failure_rate,
            window_calls=b.window_calls,
            consecutive_failures=b.consecutive_failures,
            opened_at=at(b.opened_at),
            next_probe_at=at(b.next_probe_at),
        )


class ErrorGroupPublic(BaseModel):
    fingerprint: str
    category: str
    code: str
    severity: str
    count: int
    executions: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str


class TrendPointPublic(BaseModel):
    bucket_start: datetime
    category: str
    count: int


class AlertPublic(BaseModel):
    id: str
    rule: str
    severity: str
    title: str
    detail: str
    execution_id: str | None
    created_at: datetime
    delivered: bool
    delivered_at: datetime | None
    delivery_attempts: int
    last_error: str | None

    @classmethod
    def of(cls, a: Alert) -> AlertPublic:
        return cls(
            id=a.id,
            rule=a.rule,
            severity=a.severity,
            title=a.title,
            detail=a.detail,
            execution_id=a.execution_id,
            created_at=_utc(a.created_at),
            delivered=a.delivered,
            delivered_at=_utc(a.delivered_at),
            delivery_attempts=a.delivery_attempts,
            last_error=a.last_error,
        )


class ProblemPublic(BaseModel):
    """RFC 9457 problem details (every non-2xx answer)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str
    errors: list[dict[str, Any]] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": ProblemPublic,
            "content": {"application/problem+json": {}},
            "description": "Problem details with a stable code",
        }
        for status in statuses
    }


class HealthPublic(BaseModel):
    status: str
    database: str
    temporal: str


class ErrorCodePublic(BaseModel):
    code: str
    kind: str  # failure (of a task or execution) | problem (of an API request)
    category: str | None  # failures only
    severity: str | None  # failures only
    retryable: bool
    http_status: int
    description: str
    remedy: str
