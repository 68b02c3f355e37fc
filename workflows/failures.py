"""Error records the workflow builds itself, and the markdown cards it shows in the Web UI.
Sandbox-safe: pure functions over Temporal's exception types and crewrun's pure modules."""

from __future__ import annotations

import traceback
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from backend.exceptions.codes import REGISTRY
from backend.exceptions.redaction import redact_message, redact_stack


def activity_error_record(err: ActivityError, task: str, agent: str) -> dict[str, Any]:
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


def workflow_code_error(bug: Exception) -> dict[str, Any]:
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


def pause_timeout_error(task: str, agent: str, cause: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    return {
        "code": "EXECUTION_PAUSE_TIMEOUT",
        "category": "internal",
        "severity": "high",
        "retryable": False,
        "message": f"paused on {cause['code']} for {timeout_s:g}s without a resume, skip or abort",
        "task": task,
        "agent": agent,
        "cause": cause,
    }


def aborted_error(task: str, agent: str, reason: str, cause: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": "EXECUTION_ABORTED",
        "category": "cancelled",
        "severity": "medium",
        "retryable": False,
        "message": redact_message(f"aborted by an operator: {reason}"),
        "task": task,
        "agent": agent,
        "cause": cause,
    }


def error_card(error: dict[str, Any]) -> str:
    """Markdown shown as the workflow's current details in the Web UI."""
    return (
        f"**{error['code']}** ({error['category']}, {error['severity']})\n\n"
        f"task `{error.get('task')}`, agent `{error.get('agent')}`, service `{error.get('service')}`, "
        f"attempt {error.get('category_attempt', '?')}/{error.get('max_attempts', '?')}\n\n"
        f"{error['message'][:500]}"
    )


def pause_card(error: dict[str, Any], timeout_s: float) -> str:
    entry = REGISTRY.get(error["code"])
    remedy = entry.remedy if entry else "Fix the cause, then resume."
    return (
        f"**Paused: {error['code']}** on task `{error.get('task')}` (agent `{error.get('agent')}`)\n\n"
        f"{error['message'][:300]}\n\n**To fix:** {remedy}\n\n"
        f'Then signal `resume` (retry the task), `skip` (`{{"task": "{error.get("task")}"}}`) or '
        f"`abort`. Without one within {timeout_s:g}s the execution fails and is dead-lettered."
    )
