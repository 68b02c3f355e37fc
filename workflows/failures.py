"""Error records the workflow builds itself, and the markdown cards it shows in the Web UI.
Sandbox-safe: pure functions over Temporal's exception types and crewrun's pure modules."""

from __future__ import annotations

import traceback

from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from backend.exceptions.codes import REGISTRY
from backend.exceptions.records import ErrorRecord
from backend.exceptions.redaction import redact_message, redact_stack


def activity_error_record(err: ActivityError, task: str, agent: str) -> ErrorRecord:
    """The structured record the activity boundary attached, or one for failures the boundary
    never saw (a timeout enforced by the server, a worker that died on every attempt)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        return ErrorRecord.from_dict(cause.details[0])
    timed_out = isinstance(cause, TemporalTimeoutError)
    return ErrorRecord(
        code="TASK_TIMED_OUT" if timed_out else "TASK_FAILED",
        category="timeout" if timed_out else "internal",
        severity="high",
        retryable=False,
        message=redact_message(f"{type(cause or err).__name__}: {cause or err}"),
        task=task,
        agent=agent,
    )


def workflow_code_error(bug: Exception) -> ErrorRecord:
    message = redact_message(f"{type(bug).__name__}: {_described(bug)}")
    return ErrorRecord(
        code="WORKFLOW_CODE_ERROR",
        category="internal",
        severity="critical",
        retryable=False,
        message=f"[WORKFLOW_CODE_ERROR] {message}",
        exception_type=f"{type(bug).__module__}.{type(bug).__qualname__}",
        stack=redact_stack("".join(traceback.format_exception(bug))),
    )


def _described(bug: Exception) -> str:
    """A spec that does not validate says where, without echoing the whole spec back."""
    errors = getattr(bug, "errors", None)
    if callable(errors):  # a pydantic ValidationError
        try:
            found = errors(include_input=False, include_url=False)
            where = [".".join(map(str, e["loc"])) for e in found]
            return "; ".join(
                f"{loc}: {e['msg']}" if loc else e["msg"] for loc, e in zip(where, found, strict=True)
            )
        except TypeError:
            pass
    return str(bug)


def pause_timeout_error(task: str, agent: str, cause: ErrorRecord, timeout_s: float) -> ErrorRecord:
    return ErrorRecord(
        code="EXECUTION_PAUSE_TIMEOUT",
        category="internal",
        severity="high",
        retryable=False,
        message=f"paused on {cause.code} for {timeout_s:g}s without a resume, skip or abort",
        task=task,
        agent=agent,
        cause=cause.to_dict(),
    )


def aborted_error(task: str, agent: str, reason: str, cause: ErrorRecord) -> ErrorRecord:
    return ErrorRecord(
        code="EXECUTION_ABORTED",
        category="cancelled",
        severity="medium",
        retryable=False,
        message=redact_message(f"aborted by an operator: {reason}"),
        task=task,
        agent=agent,
        cause=cause.to_dict(),
    )


def error_card(error: ErrorRecord) -> str:
    """Markdown shown as the workflow's current details in the Web UI."""
    return (
        f"**{error.code}** ({error.category}, {error.severity})\n\n"
        f"task `{error.task}`, agent `{error.agent}`, service `{error.service}`, "
        f"attempt {error.category_attempt or '?'}/{error.max_attempts or '?'}\n\n"
        f"{error.message[:500]}"
    )


def pause_card(error: ErrorRecord, timeout_s: float) -> str:
    entry = REGISTRY.get(error.code)
    remedy = entry.remedy if entry else "Fix the cause, then resume."
    return (
        f"**Paused: {error.code}** on task `{error.task}` (agent `{error.agent}`)\n\n"
        f"{error.message[:300]}\n\n**To fix:** {remedy}\n\n"
        f'Then signal `resume` (retry the task), `skip` (`{{"task": "{error.task}"}}`) or '
        f"`abort`. Without one within {timeout_s:g}s the execution fails and is dead-lettered."
    )


def feedback_timeout_error(task: str, agent: str, timeout_s: float) -> ErrorRecord:
    return ErrorRecord(
        code="EXECUTION_FEEDBACK_TIMEOUT",
        category="internal",
        severity="high",
        retryable=False,
        message=f"task {task} waited {timeout_s:g}s for a person's feedback on its output",
        task=task,
        agent=agent,
    )


def feedback_card(task: str, agent: str, output_preview: str, timeout_s: float) -> str:
    return (
        f"**Awaiting feedback** on task `{task}` (agent `{agent}`)\n\n"
        f"Its output begins:\n\n> {output_preview[:300]}\n\n"
        f'Signal `feedback` with `{{"task": "{task}", "approve": true}}` to go on, or '
        f'`{{"task": "{task}", "approve": false, "feedback": "..."}}` to run it again with your '
        f"feedback. Without an answer within {timeout_s:g}s the execution fails and is dead-lettered."
    )
