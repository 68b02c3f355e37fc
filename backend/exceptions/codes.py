"""The error-code registry: every stable code crewrun emits, with what it means and what to do.

Codes are upper-snake identifiers that never change meaning once published: API clients switch on
them, dashboards group by them. The API's problem+json ``code`` always comes from here, so
``GET /api/v1/error-codes`` documents every code a client can see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Category(StrEnum):
    NETWORK = "network"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    EXTERNAL_SERVICE = "external_service"
    CIRCUIT_OPEN = "circuit_open"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    DATABASE = "database"
    LLM_OUTPUT = "llm_output"
    VALIDATION = "validation"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    AUTHENTICATION = "authentication"
    QUOTA_EXHAUSTED = "quota_exhausted"
    CONFIGURATION = "configuration"
    INTERNAL = "internal"
    CANCELLED = "cancelled"


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
        False,
        500,
        "An unexpected error inside crewrun.",
        "Report it with the `instance` value.",
    ),
    # --- crew execution failures (refined by the classification issue) ---
    _c(
        "LLM_RATE_LIMITED",
        C.RATE_LIMIT,
        S.LOW,
        True,
        429,
        "The LLM provider rate-limited the call (HTTP 429).",
        "Wait; crewrun retries after Retry-After.",
    ),
    _c(
        "LLM_PROVIDER_ERROR",
        C.EXTERNAL_SERVICE,
        S.MEDIUM,
        True,
        502,
        "The LLM provider answered with a server error (5xx) or is overloaded.",
        "Usually transient; crewrun retries with backoff.",
    ),
    _c(
        "LLM_TIMEOUT",
        C.TIMEOUT,
        S.MEDIUM,
        True,
        504,
        "The LLM call timed out.",
        "Usually transient; raise the LLM timeout_s if it persists.",
    ),
    _c(
        "NETWORK_CONNECT_FAILED",
        C.NETWORK,
        S.MEDIUM,
        True,
        502,
        "The provider could not be reached or dropped the connection.",
        "Check the base_url and the network; crewrun retries with backoff.",
    ),
    _c(
        "LLM_OUTPUT_INVALID",
        C.LLM_OUTPUT,
        S.MEDIUM,
        True,
        502,
        "The LLM answer could not be parsed.",
        "Retried a few times; check the model and prompt.",
    ),
    _c(
        "LLM_AUTH_FAILED",
        C.AUTHENTICATION,
        S.CRITICAL,
        False,
        401,
        "The provider rejected the API key (401/403).",
        "Fix the key in the env var named by api_key_env, then resume the execution.",
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
    _c(
        "LLM_BAD_REQUEST",
        C.VALIDATION,
        S.MEDIUM,
        False,
        400,
        "The provider rejected the request as invalid (400/404/422).",
        "Check the model name and LLM settings in the crew spec.",
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
        "TASK_FAILED",
        C.INTERNAL,
        S.HIGH,
        False,
        500,
        "A crew task failed and its retries are spent.",
        "Read the execution's error record.",
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


# Categories that a retry cannot fix: declared to Temporal as non-retryable error types, so the
# server never schedules another attempt for them.
NON_RETRYABLE_CATEGORIES: tuple[str, ...] = tuple(
    c.value
    for c in (
        Category.VALIDATION,
        Category.CONTEXT_LENGTH,
        Category.CONTENT_POLICY,
        Category.AUTHENTICATION,
        Category.QUOTA_EXHAUSTED,
        Category.CONFIGURATION,
        Category.CANCELLED,
    )
)
