"""Inputs and outputs shared by the API (client), the workflow and the activities.

Plain dataclasses of JSON types: they cross the Temporal payload boundary and the workflow
sandbox. Large things (task outputs) stay in the backend DB; history carries ids and previews.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.exceptions.categories import PAUSES_BY_DEFAULT

WORKFLOW_NAME = "CrewExecution"
RUN_TASK_ACTIVITY = "run_crew_task"
RECORD_STATUS_ACTIVITY = "record_execution_status"
COMPENSATE_ACTIVITY = "compensate_execution"
SKIP_TASK_ACTIVITY = "skip_task"
RECORD_FEEDBACK_ACTIVITY = "record_feedback"
ALERT_WORKFLOW_NAME = "AlertDelivery"
DELIVER_ALERT_ACTIVITY = "deliver_alert"
WEBHOOK_WORKFLOW_NAME = "WebhookDelivery"
DELIVER_WEBHOOKS_ACTIVITY = "deliver_webhooks"
OUTPUT_PREVIEW_CHARS = 200


@dataclass
class ActivityTuning:
    """Deployment settings the workflow needs; passed in because workflow code reads no env."""

    heartbeat_timeout_s: float = 30.0
    alert_delivery_max_interval_s: float = 30.0
    default_task_timeout_s: float = 600.0
    # Per-category retry overrides of the deployment (settings); crew and task specs override them.
    retry_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Failures an operator can fix pause the execution instead of failing it.
    pause_categories: list[str] = field(default_factory=lambda: list(PAUSES_BY_DEFAULT))
    pause_timeout_s: float = 86_400.0


@dataclass
class CrewExecutionInput:
    execution_id: str
    crew_name: str
    spec: dict[str, Any]  # a validated CrewSpec (never holds secrets: keys are env var names)
    inputs: dict[str, Any]
    tuning: ActivityTuning = field(default_factory=ActivityTuning)
    seeded: list[str] = field(default_factory=list)  # tasks completed by an earlier run (replay)


@dataclass
class FinalFailure:
    """What the workflow does with a task that fails for good, decided once per task: categories
    that pause leave the task open for an operator; any other makes it ``otherwise``: ``failed``,
    or ``degraded`` for an optional task (the crew goes on without it)."""

    pause: list[str] = field(default_factory=list)
    otherwise: str = "failed"


@dataclass
class FinishExecution:
    status: str  # completed | degraded
    message: str


@dataclass
class RunTaskInput:
    execution_id: str
    crew_name: str
    task: dict[str, Any]  # TaskSpec
    agent: dict[str, Any]  # AgentSpec
    context: list[str]  # names of the tasks whose outputs this task sees
    inputs: dict[str, Any]
    retry: dict[str, dict[str, Any]] = field(default_factory=dict)  # resolved per-category table
    on_final_failure: FinalFailure = field(default_factory=FinalFailure)
    # The execution's first task: its first claim also marks the execution running (the
    # workflow's decision, written in the attempt's first transaction instead of an activity).
    mark_running: bool = False
    # The execution's last task: when it completes, the execution ends with it (completed, or
    # degraded when an earlier task left a gap), in the same transaction as its output.
    finish_execution: FinishExecution | None = None
    # Sent by workflows started before on_final_failure existed; read by nothing.
    pause_categories: list[str] = field(default_factory=list)
    # Where the task's crew comes from: "spec" (built from the JSON spec) or "python" (the crew a
    # worker carries, by name), and the task's position in it.
    source: str = "spec"
    task_index: int = 0
    # Human input: this run follows ``revision`` rejections (their feedback is in the DB).
    revision: int = 0
    # Whether a retry may be served from the calls earlier attempts recorded (the crew's choice).
    replay: bool = True
    # Attempts the task's earlier activities made (before a pause it was resumed from, or a
    # rejection of its output): this activity's attempts are numbered after them.
    attempt_offset: int = 0


@dataclass
class TaskResult:
    task: str
    attempts: int
    output_preview: str
    output_chars: int
    model: str | None = None
    reused: bool = False  # the output was already in the DB (an earlier attempt committed it)
    awaiting_feedback: bool = False  # a human_input task: its output waits for a person


@dataclass
class StatusUpdate:
    execution_id: str
    status: str
    message: str = ""
    error: dict[str, Any] | None = None


@dataclass
class CompensationInput:
    execution_id: str
    status: str  # failed | cancelled
    reason: str
    error: dict[str, Any] | None = None


@dataclass
class ResumeRequest:
    """Signal/update ``resume``: retry the paused task, optionally with changed inputs or LLM."""

    task: str | None = None
    inputs_patch: dict[str, Any] = field(default_factory=dict)
    llm_override: dict[str, Any] | None = None


@dataclass
class SkipRequest:
    """Signal/update ``skip``: mark the paused task skipped (with an optional stand-in output)."""

    task: str
    output: str | None = None


@dataclass
class FeedbackRequest:
    """Signal/update ``feedback``: a person's decision on a human_input task's output. Rejected
    (``approve`` false), the task runs again with ``feedback``."""

    task: str
    approve: bool
    feedback: str = ""
    # The revision of the output the person judged (the task's rejections before it); given, a
    # decision reaching the workflow while it waits on another revision is refused, not applied
    # to an output nobody read.
    revision: int | None = None


@dataclass
class FeedbackInput:
    execution_id: str
    task: str
    revision: int
    approve: bool
    feedback: str = ""


@dataclass
class AbortRequest:
    reason: str = "aborted by an operator"


@dataclass
class SkipTaskInput:
    execution_id: str
    task: str
    output: str | None = None


@dataclass
class WebhookProgress:
    delivered: int
    done: bool  # the execution ended and every event of it is delivered


@dataclass
class TaskProgress:
    name: str
    agent: str
    status: str = "pending"
    attempts: int = 0
    output: str | None = None  # a preview; the full output is in the DB
    error: dict[str, Any] | None = None
    degraded: bool = False
    started_at: str | None = None
    finished_at: str | None = None


@dataclass
class CrewExecutionResult:
    execution_id: str
    status: str
    tasks: list[TaskProgress]
    error: dict[str, Any] | None = None
    gaps: list[str] = field(default_factory=list)  # tasks degraded or skipped
