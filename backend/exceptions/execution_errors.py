"""crewrun's own exceptions: a :class:`CrewrunError` carries its code (category, severity and
whether it is retried follow from the registry and the category's traits), so the code decides
what happens to it, not the class.

    CrewrunError          any registered code (default INTERNAL_ERROR); retry_after_s, service
    ├── CircuitOpenError  CIRCUIT_OPEN: a breaker refused the call (waits, spends no budget)
    ├── LLMOutputError    LLM_OUTPUT_INVALID: an answer the agent cannot use
    ├── ContextLengthError LLM_CONTEXT_TOO_LONG: the prompt does not fit
    └── ConfigurationError CONFIG_INVALID (or another configuration code): a setting to fix

Subclasses exist only where crewrun raises that failure itself and a caller or a test names it.
Foreign exceptions (openai, anthropic, httpx, crewai, sqlalchemy, the OS) are translated in one
place, :mod:`backend.exceptions.classifier`. Pure module: the workflow sandbox may import it.
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


class CircuitOpenError(CrewrunError):
    default_code = "CIRCUIT_OPEN"


class LLMOutputError(CrewrunError):
    default_code = "LLM_OUTPUT_INVALID"


class ContextLengthError(CrewrunError):
    default_code = "LLM_CONTEXT_TOO_LONG"


class ConfigurationError(CrewrunError):
    default_code = "CONFIG_INVALID"
