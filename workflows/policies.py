"""Activity options, named once and used by name from workflow code.

Temporal owns every retry: CrewAI's and the provider SDK's own retries are off, so each provider
call is one activity attempt and shows up in history.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from backend.exceptions.codes import NON_RETRYABLE_CATEGORIES
from workflows.contracts import ActivityTuning


def task_activity_options(
    task: dict[str, Any], agent: dict[str, Any], tuning: ActivityTuning
) -> dict[str, Any]:
    timeout_s = task.get("timeout_s") or tuning.default_task_timeout_s
    return {
        "start_to_close_timeout": timedelta(seconds=timeout_s),
        "heartbeat_timeout": timedelta(seconds=tuning.heartbeat_timeout_s),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(seconds=tuning.retry_initial_interval_s),
            backoff_coefficient=tuning.retry_backoff,
            maximum_interval=timedelta(seconds=tuning.retry_max_interval_s),
            maximum_attempts=tuning.retry_max_attempts,
            non_retryable_error_types=list(NON_RETRYABLE_CATEGORIES),
        ),
        "summary": f"task {task['name']} · agent {agent['name']} ({agent['role'][:60]})",
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
