"""Activity options, named once and used by name from workflow code.

Temporal owns every retry: CrewAI's and the provider SDK's own retries are off, so each provider
call is one activity attempt and shows up in history. The RetryPolicy of a crew task is derived
from its per-category table: non-retryable categories are declared as non-retryable error types,
``maximum_attempts`` is an envelope above every category's budget, and the activity boundary
enforces each category's own budget and jittered backoff through ``next_retry_delay``. The
interval fields only govern what the boundary never sees: timeouts enforced by the server and
crashed workers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from backend.exceptions.categories import NON_RETRYABLE, Category, CategoryPolicy
from backend.exceptions.retry_policy import envelope, resolve
from backend.specs import AgentSpec, CrewSpec, RetrySpec, TaskSpec
from workflows.contracts import ActivityTuning


def task_retry_table(spec: CrewSpec, task: TaskSpec, tuning: ActivityTuning) -> dict[str, CategoryPolicy]:
    """Defaults, then the deployment's settings, then the crew's, then the task's overrides."""
    return resolve(tuning.retry_overrides, _overrides(spec.retry), _overrides(task.retry))


def _overrides(layer: RetrySpec) -> dict[str, dict[str, Any]]:
    return {category: o.model_dump(exclude_none=True) for category, o in layer.items()}


def task_retry_policy(table: dict[str, CategoryPolicy]) -> RetryPolicy:
    timeout = table[Category.TIMEOUT.value]
    return RetryPolicy(
        initial_interval=timedelta(seconds=timeout.initial_interval_s),
        backoff_coefficient=timeout.backoff,
        maximum_interval=timedelta(seconds=timeout.maximum_interval_s),
        maximum_attempts=envelope(table),
        non_retryable_error_types=list(NON_RETRYABLE),
    )


def task_activity_options(
    task: TaskSpec, agent: AgentSpec, tuning: ActivityTuning, table: dict[str, CategoryPolicy]
) -> dict[str, Any]:
    timeout_s = task.timeout_s or tuning.default_task_timeout_s
    return {
        "start_to_close_timeout": timedelta(seconds=timeout_s),
        "heartbeat_timeout": timedelta(seconds=tuning.heartbeat_timeout_s),
        "retry_policy": task_retry_policy(table),
        "summary": f"task {task.name} · agent {agent.name} ({agent.role[:60]})",
    }


# Status records go to the backend DB: retried patiently and without an attempt limit, so a DB
# outage delays the record but never loses it.
STATUS_ACTIVITY_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=0,
    ),
}


# The compensation record must be written whatever the database does: no attempt limit, backoff up
# to 30 s. Idempotent per workflow run, so a retry after an ambiguous commit is a no-op.
COMPENSATION_ACTIVITY_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=0,
    ),
    "summary": "compensation: final status, error record, dead letter",
}
