"""crewrun's own exceptions, one class per error category, grouped by what a caller does next.

    CrewrunError                      code, category, severity, retryable (from the registry)
    ├── TransientError                worth retrying, with backoff
    │   ├── NetworkError              network              NETWORK_CONNECT_FAILED
    │   ├── ProviderTimeoutError      timeout              LLM_TIMEOUT
    │   ├── RateLimitedError          rate_limit           LLM_RATE_LIMITED     (Retry-After first)
    │   ├── ExternalServiceError      external_service     LLM_PROVIDER_ERROR   (counts toward a breaker)
    │   ├── CircuitOpenError          circuit_open         CIRCUIT_OPEN         (waits, spends no budget)
    │   ├── ResourceExhaustedError    resource_exhaustion  RESOURCE_EXHAUSTED
    │   └── DatabaseError             database             DB_UNAVAILABLE
    ├── LLMOutputError                llm_output           LLM_OUTPUT_INVALID   (a few retries)
    ├── PermanentError                a retry cannot fix it: the task fails
    │   ├── InvalidRequestError       validation           LLM_BAD_REQUEST
    │   ├── ContextLengthError        context_length       LLM_CONTEXT_TOO_LONG
    │   └── ContentPolicyError        content_policy       LLM_CONTENT_REFUSED
    ├── OperatorActionRequired        an operator must fix something, then resume
    │   ├── AuthenticationError       authentication       LLM_AUTH_FAILED
    │   ├── QuotaExhaustedError       quota_exhausted      LLM_QUOTA_EXHAUSTED
    │   └── ConfigurationError        configuration        CONFIG_INVALID
    ├── InternalError                 internal             INTERNAL_ERROR       (a bug; two tries)
    └── ExecutionCancelled            cancelled            EXECUTION_CANCELLED

crewrun code raises these; foreign exceptions (openai, anthropic, httpx, crewai, sqlalchemy, the OS)
are translated in one place, :mod:`backend.exceptions.classifier`. Intermediate classes exist
because callers catch the group (``except OperatorActionRequired`` pauses an execution).
Pure module: the workflow sandbox may import it.
"""

from __future__ import annotations

from typing import ClassVar

from backend.exceptions.codes import Category, ErrorCode, lookup


class CrewrunError(Exception):
    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: float | None = None,
        service: str | None = None,
    ) -> None:
        super().__init__(message)
        self.entry: ErrorCode = lookup(code or self.default_code)
        self.retry_after_s = retry_after_s
        self.service = service

    @property
    def code(self) -> str:
        return self.entry.code

    @property
    def category(self) -> Category:
        return self.entry.category


class TransientError(CrewrunError):
    pass


class NetworkError(TransientError):
    default_code = "NETWORK_CONNECT_FAILED"


class ProviderTimeoutError(TransientError):
    default_code = "LLM_TIMEOUT"


class RateLimitedError(TransientError):
    default_code = "LLM_RATE_LIMITED"


class ExternalServiceError(TransientError):
    default_code = "LLM_PROVIDER_ERROR"


class CircuitOpenError(TransientError):
    default_code = "CIRCUIT_OPEN"


class ResourceExhaustedError(TransientError):
    default_code = "RESOURCE_EXHAUSTED"


class DatabaseError(TransientError):
    default_code = "DB_UNAVAILABLE"


class LLMOutputError(CrewrunError):
    default_code = "LLM_OUTPUT_INVALID"


class PermanentError(CrewrunError):
    pass


class InvalidRequestError(PermanentError):
    default_code = "LLM_BAD_REQUEST"


class ContextLengthError(PermanentError):
    default_code = "LLM_CONTEXT_TOO_LONG"


class ContentPolicyError(PermanentError):
    default_code = "LLM_CONTENT_REFUSED"


class OperatorActionRequired(CrewrunError):
    pass


class AuthenticationError(OperatorActionRequired):
    default_code = "LLM_AUTH_FAILED"


class QuotaExhaustedError(OperatorActionRequired):
    default_code = "LLM_QUOTA_EXHAUSTED"


class ConfigurationError(OperatorActionRequired):
    default_code = "CONFIG_INVALID"


class InternalError(CrewrunError):
    default_code = "INTERNAL_ERROR"


class ExecutionCancelled(CrewrunError):
    default_code = "EXECUTION_CANCELLED"
