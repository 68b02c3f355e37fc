"""The error-code registry: every stable code crewrun emits, with what it means and what to do.

Codes are upper-snake identifiers that never change meaning once published: API clients switch on
them, dashboards group by them. The API's problem+json ``code`` always comes from here, so
``GET /api/v1/error-codes`` documents every code a client can see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from backend.exceptions.categories import Category


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
    retryable: bool
    http_status: int
    description: str
    remedy: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _c(
    code: str,
    category: Category,
    severity: Severity,
    retryable: bool,
    http_status: int,
    description: str,
    remedy: str,
) -> ErrorCode:
    return ErrorCode(code, category, severity, retryable, http_status, description, remedy)


V, S, C = Category, Severity, Category
_REGISTRY: tuple[ErrorCode, ...] = (
    # --- API request problems ---
    _c(
        "REQUEST_INVALID",
        V.VALIDATION,
        S.LOW,
        False,
        422,
        "The request body or parameters failed validation.",
        "Fix the fields listed in `errors`.",
    ),
    _c(
        "REQUEST_MALFORMED",
        V.VALIDATION,
        S.LOW,
        False,
        400,
        "The request body is not valid JSON (or not UTF-8).",
        "Send a UTF-8 JSON body.",
    ),
    _c(
        "PAYLOAD_TOO_LARGE",
        V.VALIDATION,
        S.LOW,
        False,
        413,
        "The request body exceeds the configured size limit.",
        "Send a smaller body.",
    ),
    _c(
        "CREW_SPEC_INVALID",
        V.VALIDATION,
        S.LOW,
        False,
        422,
        "The crew spec or the inputs it needs are invalid.",
        "Fix the fields listed in `errors` (unknown agents, context cycles, missing inputs).",
    ),
    _c(
        "CREW_NAME_TAKEN",
        V.VALIDATION,
        S.LOW,
        False,
        409,
        "A crew with this name already exists.",
        "Choose another name or use the existing crew.",
    ),
    _c(
        "CREW_NOT_FOUND",
        V.VALIDATION,
        S.LOW,
        False,
        404,
        "No crew has this id.",
        "List crews with GET /api/v1/crews.",
    ),
    _c(
        "EXECUTION_NOT_FOUND",
        V.VALIDATION,
        S.LOW,
        False,
        404,
        "No execution has this id.",
        "List executions with GET /api/v1/executions.",
    ),
    _c(
        "EXECUTION_TERMINAL",
        V.VALIDATION,
        S.LOW,
        False,
        409,
        "The execution has already finished; it cannot be changed.",
        "Start a new execution (or replay its dead letter).",
    ),
    _c(
        "IDEMPOTENCY_KEY_REUSED",
        V.VALIDATION,
        S.LOW,
        False,
        409,
        "This Idempotency-Key was already used with a different request body.",
        "Use a new key for a different request.",
    ),
    _c(
        "DEAD_LETTER_NOT_FOUND",
        V.VALIDATION,
        S.LOW,
        False,
        404,
        "No dead letter has this id.",
        "List them with GET /api/v1/dead-letters.",
    ),
    _c(
        "DEAD_LETTER_NOT_OPEN",
        V.VALIDATION,
        S.LOW,
        False,
        409,
        "The dead letter was already replayed or discarded.",
        "See replayed_execution_id.",
    ),
    _c(
        "CIRCUIT_BREAKER_NOT_FOUND",
        V.VALIDATION,
        S.LOW,
        False,
        404,
        "No circuit breaker exists for this service yet.",
        "List them with GET /api/v1/circuit-breakers.",
    ),
    _c(
        "UNAUTHORIZED",
        V.VALIDATION,
        S.MEDIUM,
        False,
        401,
        "No valid API key: every route but /health needs Authorization: Bearer <key>.",
        "Send a key from CREWRUN_API_KEYS / CREWRUN_API_KEY_HASHES.",
    ),
    _c(
        "API_RATE_LIMITED",
        V.VALIDATION,
        S.LOW,
        True,
        429,
        "Too many requests for this API key.",
        "Wait for Retry-After seconds.",
    ),
    _c("NOT_FOUND", V.VALIDATION, S.LOW, False, 404, "No such route.", "See /docs for the routes."),
    _c(
        "METHOD_NOT_ALLOWED",
        V.VALIDATION,
        S.LOW,
        False,
        405,
        "This route does not accept this method.",
        "See /docs for the routes.",
    ),
    # --- dependencies of the API ---
    _c(
        "DATABASE_UNAVAILABLE",
        C.DATABASE,
        S.HIGH,
        True,
        503,
        "The backend database is unreachable or locked.",
        "Retry after the Retry-After delay.",
    ),
    _c(
        "TEMPORAL_UNAVAILABLE",
        C.EXTERNAL_SERVICE,
        S.HIGH,
        True,
        503,
        "The Temporal server is unreachable.",
        "Retry after the Retry-After delay.",
    ),
    _c(
        "INTERNAL_ERROR",
        C.INTERNAL,
        S.HIGH,
        True,  # an unknown error gets a small retry budget (two attempts) before it fails the task
        500,
        "An unexpected error inside crewrun (in a task: an unclassified exception).",
        "Report it with the `instance` value or the execution id.",
    ),
    # --- network ---
    _c(
        "NETWORK_CONNECT_FAILED",
        C.NETWORK,
        S.MEDIUM,
        True,
        502,
        "The provider could not be reached (connection refused, unreachable host).",
        "Check the base_url and the network; crewrun retries with backoff.",
    ),
    _c(
        "NETWORK_CONNECTION_RESET",
        C.NETWORK,
        S.MEDIUM,
        True,
        502,
        "The provider dropped the connection before answering.",
        "Usually transient; retried.",
    ),
    _c(
        "NETWORK_DNS_FAILED",
        C.NETWORK,
        S.MEDIUM,
        True,
        502,
        "The provider's host name did not resolve.",
        "Check the base_url host and DNS.",
    ),
    _c(
        "NETWORK_TLS_FAILED",
        C.NETWORK,
        S.MEDIUM,
        True,
        502,
        "The TLS handshake with the provider failed.",
        "Check certificates and proxies.",
    ),
    # --- timeout ---
    _c(
        "LLM_TIMEOUT",
        C.TIMEOUT,
        S.MEDIUM,
        True,
        504,
        "The LLM call timed out.",
        "Usually transient; raise the LLM timeout_s if it persists.",
    ),
    # --- rate limits and provider health ---
    _c(
        "LLM_RATE_LIMITED",
        C.RATE_LIMIT,
        S.LOW,
        True,
        429,
        "The LLM provider rate-limited the call (HTTP 429).",
        "Nothing to do: crewrun waits at least the provider's Retry-After, then retries.",
    ),
    _c(
        "LLM_PROVIDER_ERROR",
        C.EXTERNAL_SERVICE,
        S.MEDIUM,
        True,
        502,
        "The LLM provider answered with a server error (5xx).",
        "Usually transient; crewrun retries with backoff.",
    ),
    _c(
        "LLM_PROVIDER_OVERLOADED",
        C.EXTERNAL_SERVICE,
        S.MEDIUM,
        True,
        503,
        "The LLM provider is overloaded or unavailable (503/529).",
        "Retried with backoff.",
    ),
    _c(
        "CIRCUIT_OPEN",
        C.CIRCUIT_OPEN,
        S.LOW,
        True,
        503,
        "The circuit breaker of this service is open: calls wait instead of failing.",
        "Nothing to do: the execution continues when a probe call succeeds.",
    ),
    # --- resources and database ---
    _c(
        "RESOURCE_EXHAUSTED",
        C.RESOURCE_EXHAUSTION,
        S.HIGH,
        True,
        503,
        "The worker ran out of a resource.",
        "Check the worker's memory, disk and file limits.",
    ),
    _c(
        "RESOURCE_MEMORY",
        C.RESOURCE_EXHAUSTION,
        S.HIGH,
        True,
        503,
        "The worker ran out of memory.",
        "Give workers more memory or run fewer tasks each.",
    ),
    _c(
        "RESOURCE_DISK_FULL",
        C.RESOURCE_EXHAUSTION,
        S.HIGH,
        True,
        503,
        "A disk of the worker is full (ENOSPC/EDQUOT).",
        "Free disk space.",
    ),
    _c(
        "RESOURCE_FILE_LIMIT",
        C.RESOURCE_EXHAUSTION,
        S.HIGH,
        True,
        503,
        "The worker hit its open-file limit (EMFILE/ENFILE).",
        "Raise ulimit -n or fix a leak.",
    ),
    _c(
        "DB_UNAVAILABLE",
        C.DATABASE,
        S.HIGH,
        True,
        503,
        "The backend database is unreachable.",
        "Restore the database; work resumes by itself.",
    ),
    _c(
        "DB_LOCKED",
        C.DATABASE,
        S.HIGH,
        True,
        503,
        "The backend database is locked or hit a deadlock.",
        "Transient; retried.",
    ),
    _c(
        "DB_POOL_TIMEOUT",
        C.DATABASE,
        S.HIGH,
        True,
        503,
        "No database connection was free in time.",
        "Raise the pool size or lower concurrency.",
    ),
    # --- answers ---
    _c(
        "LLM_OUTPUT_INVALID",
        C.LLM_OUTPUT,
        S.MEDIUM,
        True,
        502,
        "The LLM answer could not be parsed or was empty.",
        "Retried a few times; check the model and the expected_output.",
    ),
    # --- requests a retry cannot fix ---
    _c(
        "LLM_BAD_REQUEST",
        C.VALIDATION,
        S.MEDIUM,
        False,
        400,
        "The provider rejected the request as invalid (400/422).",
        "Check the LLM settings in the crew spec.",
    ),
    _c(
        "INPUT_INVALID",
        C.VALIDATION,
        S.MEDIUM,
        False,
        422,
        "Data inside the task failed validation.",
        "Fix the inputs or the spec.",
    ),
    _c(
        "LLM_CONTEXT_TOO_LONG",
        C.CONTEXT_LENGTH,
        S.MEDIUM,
        False,
        422,
        "The prompt exceeds the model's context window.",
        "Shorten inputs or context, or use a model with a larger window.",
    ),
    _c(
        "LLM_CONTENT_REFUSED",
        C.CONTENT_POLICY,
        S.MEDIUM,
        False,
        422,
        "The provider refused the request under its content policy.",
        "Change the task or inputs.",
    ),
    # --- an operator must act ---
    _c(
        "LLM_AUTH_FAILED",
        C.AUTHENTICATION,
        S.CRITICAL,
        False,
        401,
        "The provider rejected the API key (401).",
        "Fix the key in the env var named by api_key_env, then resume the execution.",
    ),
    _c(
        "LLM_PERMISSION_DENIED",
        C.AUTHENTICATION,
        S.CRITICAL,
        False,
        403,
        "The key may not use this model or endpoint (403).",
        "Grant the key access or change the model, then resume.",
    ),
    _c(
        "LLM_QUOTA_EXHAUSTED",
        C.QUOTA_EXHAUSTED,
        S.CRITICAL,
        False,
        402,
        "The provider account's quota or billing limit is exhausted.",
        "Raise the quota or switch the key, then resume the execution.",
    ),
    _c(
        "CONFIG_SECRET_MISSING",
        C.CONFIGURATION,
        S.HIGH,
        False,
        500,
        "The environment variable named by api_key_env is not set on the worker.",
        "Set it in the worker's environment, then resume the execution.",
    ),
    _c(
        "CONFIG_MODEL_UNKNOWN",
        C.CONFIGURATION,
        S.HIGH,
        False,
        404,
        "The provider does not know this model or endpoint (404).",
        "Fix llm.model / llm.base_url in the crew spec.",
    ),
    _c(
        "CONFIG_INVALID",
        C.CONFIGURATION,
        S.HIGH,
        False,
        500,
        "The worker's configuration does not allow this task to run.",
        "Fix the configuration.",
    ),
    # --- bugs and ends ---
    _c(
        "TASK_FAILED",
        C.INTERNAL,
        S.HIGH,
        False,
        500,
        "A crew task failed and its retries are spent.",
        "Read the execution's error record.",
    ),
    _c(
        "TASK_TIMED_OUT",
        C.TIMEOUT,
        S.HIGH,
        False,
        504,
        "A task exceeded its timeout (start-to-close or heartbeat) on every attempt.",
        "Raise the task's timeout_s, or look for a hung worker.",
    ),
    _c(
        "WORKFLOW_CODE_ERROR",
        C.INTERNAL,
        S.CRITICAL,
        False,
        500,
        "crewrun's workflow code raised an exception (a bug or an input it cannot handle).",
        "Report it with the execution id; the error record holds the stack.",
    ),
    _c(
        "EXECUTION_PAUSE_TIMEOUT",
        C.INTERNAL,
        S.HIGH,
        False,
        504,
        "The execution waited for an operator longer than the pause timeout.",
        "Replay its dead letter once the cause is fixed.",
    ),
    _c(
        "EXECUTION_ABORTED",
        C.CANCELLED,
        S.MEDIUM,
        False,
        409,
        "An operator aborted the paused execution.",
        "Replay its dead letter if it is still needed.",
    ),
    _c(
        "EXECUTION_NOT_PAUSED",
        V.VALIDATION,
        S.LOW,
        False,
        409,
        "The execution is not paused (or is paused on another task).",
        "Resume and skip apply to a paused execution's paused task.",
    ),
    _c(
        "TASK_UNKNOWN",
        V.VALIDATION,
        S.LOW,
        False,
        422,
        "The crew has no task of this name.",
        "Use a task name of the crew spec.",
    ),
    _c(
        "EXECUTION_CANCELLED",
        C.CANCELLED,
        S.LOW,
        False,
        409,
        "The execution was cancelled.",
        "Start it again if it is still needed.",
    ),
)
del V, S, C

REGISTRY: dict[str, ErrorCode] = {entry.code: entry for entry in _REGISTRY}


def lookup(code: str) -> ErrorCode:
    """The registry entry of a code; an unknown code is a bug, so it raises KeyError."""
    return REGISTRY[code]
