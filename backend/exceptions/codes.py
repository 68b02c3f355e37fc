"""The failure codes: every stable code a task or an execution can fail with, its category and
severity, and what to do about it. (What the HTTP API answers a bad request with is a problem code:
backend/api/problem_codes.py. ``INTERNAL_ERROR`` is in both: a bug is a bug wherever it shows.)

Codes are upper-snake identifiers that never change meaning once published: API clients switch on
them, dashboards group by them. Whether a code is retried follows from its category's traits
(backend/exceptions/categories.py); a ``final`` code is an outcome (an execution that failed, timed
out, was aborted), which nothing retries. ``GET /api/v1/error-codes`` lists both registries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from backend.exceptions.categories import TRAITS, Category


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    category: Category
    severity: Severity
    http_status: int  # the HTTP status this failure would be, were it an answer (dead letters, records)
    description: str
    remedy: str
    final: bool = False

    @property
    def retryable(self) -> bool:
        return not self.final and TRAITS[self.category].retryable

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"retryable": self.retryable}


_f, C, S = ErrorCode, Category, Severity
# fmt: off
_REGISTRY: tuple[ErrorCode, ...] = (
    _f('INTERNAL_ERROR',            C.INTERNAL,            S.HIGH,     500, 'An unexpected error inside crewrun (in a task: an unclassified exception).', 'Report it with the `instance` value or the execution id.'),
    _f('NETWORK_CONNECT_FAILED',    C.NETWORK,             S.MEDIUM,   502, 'The provider could not be reached (connection refused, unreachable host).', 'Check the base_url and the network; crewrun retries with backoff.'),
    _f('NETWORK_CONNECTION_RESET',  C.NETWORK,             S.MEDIUM,   502, 'The provider dropped the connection before answering.', 'Usually transient; retried.'),
    _f('NETWORK_DNS_FAILED',        C.NETWORK,             S.MEDIUM,   502, "The provider's host name did not resolve.", 'Check the base_url host and DNS.'),
    _f('NETWORK_TLS_FAILED',        C.NETWORK,             S.MEDIUM,   502, 'The TLS handshake with the provider failed.', 'Check certificates and proxies.'),
    _f('LLM_TIMEOUT',               C.TIMEOUT,             S.MEDIUM,   504, 'The LLM call timed out.', 'Usually transient; raise the LLM timeout_s if it persists.'),
    _f('LLM_RATE_LIMITED',          C.RATE_LIMIT,          S.LOW,      429, 'The LLM provider rate-limited the call (HTTP 429).', "Nothing to do: crewrun waits at least the provider's Retry-After, then retries."),
    _f('LLM_PROVIDER_ERROR',        C.EXTERNAL_SERVICE,    S.MEDIUM,   502, 'The LLM provider answered with a server error (5xx).', 'Usually transient; crewrun retries with backoff.'),
    _f('LLM_PROVIDER_OVERLOADED',   C.EXTERNAL_SERVICE,    S.MEDIUM,   503, 'The LLM provider is overloaded or unavailable (503/529).', 'Retried with backoff.'),
    _f('CIRCUIT_OPEN',              C.CIRCUIT_OPEN,        S.LOW,      503, 'The circuit breaker of this service is open: calls wait instead of failing.', 'Nothing to do: the execution continues when a probe call succeeds.'),
    _f('RESOURCE_EXHAUSTED',        C.RESOURCE_EXHAUSTION, S.HIGH,     503, 'The worker ran out of a resource.', "Check the worker's memory, disk and file limits."),
    _f('RESOURCE_MEMORY',           C.RESOURCE_EXHAUSTION, S.HIGH,     503, 'The worker ran out of memory.', 'Give workers more memory or run fewer tasks each.'),
    _f('RESOURCE_DISK_FULL',        C.RESOURCE_EXHAUSTION, S.HIGH,     503, 'A disk of the worker is full (ENOSPC/EDQUOT).', 'Free disk space.'),
    _f('RESOURCE_FILE_LIMIT',       C.RESOURCE_EXHAUSTION, S.HIGH,     503, 'The worker hit its open-file limit (EMFILE/ENFILE).', 'Raise ulimit -n or fix a leak.'),
    _f('DB_UNAVAILABLE',            C.DATABASE,            S.HIGH,     503, 'The backend database is unreachable.', 'Restore the database; work resumes by itself.'),
    _f('DB_LOCKED',                 C.DATABASE,            S.HIGH,     503, 'The backend database is locked or hit a deadlock.', 'Transient; retried.'),
    _f('DB_POOL_TIMEOUT',           C.DATABASE,            S.HIGH,     503, 'No database connection was free in time.', 'Raise the pool size or lower concurrency.'),
    _f('LLM_OUTPUT_INVALID',        C.LLM_OUTPUT,          S.MEDIUM,   502, 'The LLM answer could not be parsed or was empty.', 'Retried a few times; check the model and the expected_output.'),
    _f('LLM_BAD_REQUEST',           C.VALIDATION,          S.MEDIUM,   400, 'The provider rejected the request as invalid (400/422).', 'Check the LLM settings in the crew spec.'),
    _f('INPUT_INVALID',             C.VALIDATION,          S.MEDIUM,   422, 'Data inside the task failed validation.', 'Fix the inputs or the spec.'),
    _f('LLM_CONTEXT_TOO_LONG',      C.CONTEXT_LENGTH,      S.MEDIUM,   422, "The prompt exceeds the model's context window.", 'Shorten inputs or context, or use a model with a larger window.'),
    _f('LLM_CONTENT_REFUSED',       C.CONTENT_POLICY,      S.MEDIUM,   422, 'The provider refused the request under its content policy.', 'Change the task or inputs.'),
    _f('LLM_AUTH_FAILED',           C.AUTHENTICATION,      S.CRITICAL, 401, 'The provider rejected the API key (401).', 'Fix the key in the env var named by api_key_env, then resume the execution.'),
    _f('LLM_PERMISSION_DENIED',     C.AUTHENTICATION,      S.CRITICAL, 403, 'The key may not use this model or endpoint (403).', 'Grant the key access or change the model, then resume.'),
    _f('LLM_QUOTA_EXHAUSTED',       C.QUOTA_EXHAUSTED,     S.CRITICAL, 402, "The provider account's quota or billing limit is exhausted.", 'Raise the quota or switch the key, then resume the execution.'),
    _f('CONFIG_SECRET_MISSING',     C.CONFIGURATION,       S.HIGH,     500, 'The environment variable named by api_key_env is not set on the worker.', "Set it in the worker's environment, then resume the execution."),
    _f('CONFIG_MODEL_UNKNOWN',      C.CONFIGURATION,       S.HIGH,     404, 'The provider does not know this model or endpoint (404).', 'Fix llm.model / llm.base_url in the crew spec.'),
    _f('CONFIG_CREW_UNKNOWN',       C.CONFIGURATION,       S.HIGH,     500, 'The worker that took the task does not carry this Python crew.', 'Run every worker of the task queue with the same crews (CREWRUN_CREWS), then resume.'),
    _f('CONFIG_TOOL_UNKNOWN',       C.CONFIGURATION,       S.HIGH,     500, "The worker that took the task has no tool of this name in its registry.", 'Register the tool on every worker (CREWRUN_TOOLS with a ref), then resume.'),
    _f('CONFIG_INVALID',            C.CONFIGURATION,       S.HIGH,     500, "The worker's configuration does not allow this task to run.", 'Fix the configuration.'),
    _f('TOOL_RATE_LIMITED',         C.RATE_LIMIT,          S.LOW,      429, "A tool's service rate-limited the call (HTTP 429).", "Nothing to do: crewrun waits at least the service's Retry-After, then retries the task."),
    _f('TOOL_SERVICE_ERROR',        C.EXTERNAL_SERVICE,    S.MEDIUM,   502, "A tool's service answered with a server error or is unavailable (5xx).", 'Usually transient; retried with backoff; its circuit breaker counts it.'),
    _f('TOOL_TIMEOUT',              C.TIMEOUT,             S.MEDIUM,   504, 'A tool call timed out (the HTTP client, or the tool policy timeout_s).', "Usually transient; raise the tool's timeout_s if it persists."),
    _f('TOOL_AUTH_FAILED',          C.AUTHENTICATION,      S.CRITICAL, 401, "A tool's service rejected its credentials (401/403).", "Fix the tool's key in the worker's environment, then resume the execution."),
    _f('TOOL_QUOTA_EXHAUSTED',      C.QUOTA_EXHAUSTED,     S.CRITICAL, 402, "A tool's account has no quota left.", 'Raise the quota, then resume the execution.'),
    _f('TOOL_ARGUMENTS_INVALID',    C.VALIDATION,          S.MEDIUM,   400, "A tool's service rejected the arguments the agent chose (400/422).", 'By default the agent is told and corrects itself; nothing to do unless it keeps failing.'),
    _f('TOOL_NOT_FOUND',            C.VALIDATION,          S.MEDIUM,   404, "A tool's service answered 404 for what the agent asked.", 'By default the agent is told; check the tool if it is a wrong endpoint.'),
    _f('TOOL_REQUEST_REFUSED',      C.CONTENT_POLICY,      S.MEDIUM,   422, "A tool's service refused the request under its content policy.", 'Change the task or inputs.'),
    _f('TOOL_RESPONSE_INVALID',     C.LLM_OUTPUT,          S.MEDIUM,   502, "A tool's service answered with something the tool could not read.", 'Retried a few times; check the service.'),
    _f('TOOL_FAILED',               C.INTERNAL,            S.HIGH,     500, 'A tool raised an exception crewrun does not know (a bug in the tool?).', "Retried once; read the error event's stack."),
    _f('TASK_FAILED',               C.INTERNAL,            S.HIGH,     500, 'A crew task failed and its retries are spent.', "Read the execution's error record.", final=True),
    _f('TASK_TIMED_OUT',            C.TIMEOUT,             S.HIGH,     504, 'A task exceeded its timeout (start-to-close or heartbeat) on every attempt.', "Raise the task's timeout_s, or look for a hung worker.", final=True),
    _f('WORKFLOW_CODE_ERROR',       C.INTERNAL,            S.CRITICAL, 500, "crewrun's workflow code raised an exception (a bug or an input it cannot handle).", 'Report it with the execution id; the error record holds the stack.', final=True),
    _f('EXECUTION_PAUSE_TIMEOUT',   C.INTERNAL,            S.HIGH,     504, 'The execution waited for an operator longer than the pause timeout.', 'Replay its dead letter once the cause is fixed.', final=True),
    _f('EXECUTION_FEEDBACK_TIMEOUT', C.INTERNAL,           S.HIGH,     504, "A human_input task's output waited longer than the pause timeout for a person's feedback.", 'Replay its dead letter when someone can review it.', final=True),
    _f('EXECUTION_ABORTED',         C.CANCELLED,           S.MEDIUM,   409, 'An operator aborted the paused execution.', 'Replay its dead letter if it is still needed.', final=True),
    _f('EXECUTION_CANCELLED',       C.CANCELLED,           S.LOW,      409, 'The execution was cancelled.', 'Start it again if it is still needed.', final=True),
)
# fmt: on
del _f, C, S

REGISTRY: dict[str, ErrorCode] = {entry.code: entry for entry in _REGISTRY}


def lookup(code: str) -> ErrorCode:
    """The registry entry of a code; an unknown code is a bug, so it raises KeyError."""
    return REGISTRY[code]
