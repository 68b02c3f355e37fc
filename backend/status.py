"""Execution and task status machines. Pure: the workflow sandbox imports this too.

``pending -> running <-> retrying -> completed | degraded | failed | cancelled`` plus
``running -> paused -> running | failed`` and ``running -> awaiting_feedback -> running | failed``
(a human_input task's output waits for a person). Terminal states never change, and a status never moves
back to ``pending``: writes are idempotent and monotonic, so a retried or late write (an activity
retry, a reordered update) cannot move an execution backwards.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    PAUSED = "paused"
    AWAITING_FEEDBACK = "awaiting_feedback"
    COMPLETED = "completed"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    AWAITING_FEEDBACK = "awaiting_feedback"  # its output is written; a person has not approved it
    COMPLETED = "completed"
    SKIPPED = "skipped"
    DEGRADED = "degraded"
    FAILED = "failed"


TERMINAL_EXECUTION = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.DEGRADED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
TERMINAL_TASK = frozenset({TaskStatus.COMPLETED, TaskStatus.SKIPPED, TaskStatus.DEGRADED, TaskStatus.FAILED})

_ACTIVE_EXECUTION = frozenset(
    {
        ExecutionStatus.RUNNING,
        ExecutionStatus.RETRYING,
        ExecutionStatus.PAUSED,
        ExecutionStatus.AWAITING_FEEDBACK,
    }
)
# A task awaiting feedback moves on only by a person's decision (approve: completed; reject: the
# task runs again, see backend/db/attempts.py), never by a retried write of its own attempt.
_ACTIVE_TASK = frozenset({TaskStatus.RUNNING, TaskStatus.RETRYING})


def execution_predecessors(new: str) -> frozenset[str]:
    """The statuses from which an execution may move to ``new``."""
    status = ExecutionStatus(new)
    if status == ExecutionStatus.PENDING:
        return frozenset({ExecutionStatus.PENDING})
    if status in TERMINAL_EXECUTION:
        # Not from itself: a repeated terminal write is a no-op, so its first error record stays.
        return frozenset({ExecutionStatus.PENDING, *_ACTIVE_EXECUTION})
    return frozenset({ExecutionStatus.PENDING, *_ACTIVE_EXECUTION})


def task_predecessors(new: str) -> frozenset[str]:
    status = TaskStatus(new)
    if status == TaskStatus.PENDING:
        return frozenset({TaskStatus.PENDING})
    if status in TERMINAL_TASK:  # completed: its attempt, or a person approving its output
        return frozenset({TaskStatus.PENDING, *_ACTIVE_TASK, TaskStatus.AWAITING_FEEDBACK})
    return frozenset({TaskStatus.PENDING, *_ACTIVE_TASK})
