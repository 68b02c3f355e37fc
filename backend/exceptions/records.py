"""The error record: one failure, classified, redacted and bounded, as every part of crewrun sees
it (the attempt boundary makes it; the workflow, the database, alerts and the API read it).

Across Temporal (ApplicationError details, activity inputs, heartbeat details) and in the database
it travels as JSON: :meth:`ErrorRecord.to_dict` and :meth:`ErrorRecord.from_dict` are the only
places that know the keys. Unknown keys are ignored when reading, so records written by another
version of crewrun still read. Pure: the workflow sandbox imports it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ErrorRecord:
    code: str
    category: str
    severity: str
    retryable: bool  # whether another attempt follows this one
    message: str  # redacted, bounded
    task: str | None = None
    agent: str | None = None
    service: str | None = None
    tool: str | None = None  # the tool whose call failed (None: an LLM call, or no call)
    attempt: int | None = None  # Temporal's attempt number of the task activity
    category_attempt: int | None = None  # failures of this category within the task, this one included
    max_attempts: int | None = None  # the category's budget
    status_code: int | None = None
    provider_code: str | None = None
    retry_after_s: float | None = None  # what the provider asked for
    next_retry_delay_s: float | None = None  # what crewrun chose
    fingerprint: str = ""
    exception_type: str = ""
    stack: str = ""  # redacted, bounded
    cause_chain: list[dict[str, Any]] = field(default_factory=list)
    occurred_at: str | None = None  # ISO 8601, UTC
    attempt_started_at: str | None = None
    fallback_to: str | None = None  # the model the task moves on to, when this failure switched LLMs
    cause: dict[str, Any] | None = None  # an execution-level record's underlying failure
    # What a tool's policy made of this failure when it overrides the category: "pause" the
    # execution, or "fail" the task; None: the category decides.
    action: str | None = None

    def pauses(self, pause_categories: Collection[str]) -> bool:
        """Whether this failure, once final, pauses the execution for an operator."""
        if self.action is not None:
            return self.action == "pause"
        return self.category in pause_categories

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
