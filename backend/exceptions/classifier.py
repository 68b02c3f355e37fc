"""The one place where foreign exceptions become crewrun error codes.

:func:`classify` walks an exception's chain (``__cause__``, ``__context__``: CrewAI and the provider
SDKs wrap what really happened) and applies the rule table below, most specific rule first: the
first rule that matches any exception of the chain decides. HTTP status, the provider's own error
code (``insufficient_quota``, ``context_length_exceeded``, Anthropic's ``overloaded_error``, ...) and
rate-limit headers (``retry-after-ms``, ``retry-after``, ``x-ratelimit-reset-*``,
``anthropic-ratelimit-*-reset``) are read where the exception carries a response. Anything no rule
knows is ``INTERNAL_ERROR``: retried twice, then it fails the task.

``tests/test_classifier.py`` fails when openai, anthropic or httpx export an exception class that no
rule (and no deliberate "internal" entry) covers.

Tools fail through the same table (their HTTP clients raise httpx, requests or urllib errors with
the service's status and Retry-After): ``classify(exc, tool=True)`` names the codes a tool's
failure has (``TOOL_RATE_LIMITED`` where an LLM's would be ``LLM_RATE_LIMITED``), same categories.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import re
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

from backend.exceptions.codes import ErrorCode, lookup
from backend.exceptions.execution_errors import CrewrunError

MAX_CHAIN = 16
# A Retry-After beyond a day is a provider bug or garbage ("inf"); past it the breaker and the
# operator decide, not a timer.
MAX_RETRY_AFTER_S = 86_400.0


@dataclass(frozen=True)
class Classification:
    entry: ErrorCode
    matched: BaseException  # the exception of the chain that decided
    status_code: int | None = None
    provider_code: str | None = None
    retry_after_s: float | None = None

    @property
    def code(self) -> str:
        return self.entry.code

    @property
    def category(self) -> str:
        return self.entry.category.value


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it (explicitly or implicitly), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def qualified_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------- HTTP responses


def _status_of(err: BaseException) -> int | None:
    status = getattr(err, "status_code", None)
    if status is None:
        status = getattr(getattr(err, "response", None), "status_code", None)
    if status is None and _is_urllib_http_error(err):
        status = getattr(err, "code", None)
    return status if isinstance(status, int) else None


def _provider_code(err: BaseException) -> str | None:
    """openai: body.error.code / .code; anthropic: body.error.type; generic JSON bodies too."""
    body = getattr(err, "body", None)
    if body is None:
        response = getattr(err, "response", None)
        try:
            body = json.loads(response.text) if response is not None else None
        except (ValueError, AttributeError, TypeError, UnicodeDecodeError, RuntimeError):
            body = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            for key in ("code", "type"):
                value = inner.get(key)
                if isinstance(value, str) and value and value != "error":
                    return value
    code = getattr(err, "code", None)
    return code if isinstance(code, str) and code else None


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(value: str) -> float | None:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    parts = list(_DURATION.finditer(value))
    if not parts or "".join(p.group(0) for p in parts) != value.strip():
        return None
    return sum(float(p.group("n")) * _UNIT_S[p.group("unit")] for p in parts)


def _parse_retry_after(value: str, now: datetime) -> float | None:
    value = value.strip()
    with contextlib.suppress(ValueError):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _parse_timestamp(value: str, now: datetime) -> float | None:
    try:
        when = datetime.fromisoformat(value.strip().upper())  # RFC 3339: "Z" or "z", "T" or "t"
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_after_from_headers(headers: Any, now: datetime | None = None) -> float | None:
    """The longest wait any rate-limit header asks for, in seconds (None if none does)."""
    if headers is None:
        return None
    now = now or datetime.now(UTC)
    waits: list[float] = []

    def get(name: str) -> str | None:
        value = headers.get(name)
        return value if isinstance(value, str) else None

    if (ms := get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            waits.append(float(ms) / 1000.0)
    if (ra := get("retry-after")) is not None and (parsed := _parse_retry_after(ra, now)) is not None:
        waits.append(parsed)
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        if (value := get(name)) is not None and (parsed := _parse_duration(value)) is not None:
            waits.append(parsed)
    for name in (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    ):
        if (value := get(name)) is not None and (parsed := _parse_timestamp(value, now)) is not None:
            waits.append(parsed)
    capped = [c for w in waits if (c := _capped(w)) is not None]  # NaN is no hint; inf is a day
    return max(capped) if capped else None


_QUOTA_CODES = {"insufficient_quota", "billing_error", "billing_hard_limit_reached", "credit_balance_too_low"}
_CONTEXT_CODES = {"context_length_exceeded", "request_too_large", "string_above_max_length"}
_CONTENT_CODES = {"content_policy_violation", "content_filter", "content_filter_error"}


def code_for_http(status: int | None, provider_code: str | None, message: str) -> str:
    """Provider error code first (it is the most specific), then message markers, then status."""
    pc = (provider_code or "").lower()
    msg = message.lower()
    if pc in _QUOTA_CODES or "exceeded your current quota" in msg or "credit balance is too low" in msg:
        return "LLM_QUOTA_EXHAUSTED"
    if pc in _CONTEXT_CODES or "maximum context length" in msg or "prompt is too long" in msg:
        return "LLM_CONTEXT_TOO_LONG"
    if pc in _CONTENT_CODES or "content management policy" in msg or "safety system" in msg:
        return "LLM_CONTENT_REFUSED"
    if pc in ("invalid_api_key", "authentication_error") or status == 401:
        return "LLM_AUTH_FAILED"
    if pc == "permission_error" or status == 403:
        return "LLM_PERMISSION_DENIED"
    if pc in ("model_not_found", "not_found_error") or status == 404:
        return "CONFIG_MODEL_UNKNOWN"
    if pc in ("rate_limit_exceeded", "rate_limit_error") or status == 429:
        return "LLM_RATE_LIMITED"
    if pc == "overloaded_error" or status in (503, 529):
        return "LLM_PROVIDER_OVERLOADED"
    if pc == "timeout_error":
        return "LLM_TIMEOUT"
    if pc in ("api_error", "server_error", "internal_error", "internal_server_error"):
        return "LLM_PROVIDER_ERROR"  # also sent as an error event inside a 200 stream
    if status in (408, 504):
        return "LLM_TIMEOUT"
    if status == 413:
        return "LLM_CONTEXT_TOO_LONG"
    if status == 402:
        return "LLM_QUOTA_EXHAUSTED"
    if status is not None and (status >= 500 or status == 409):
        return "LLM_PROVIDER_ERROR"
    return "LLM_BAD_REQUEST"


# ---------------------------------------------------------------- the rule table

Rule = tuple[tuple[type[BaseException], ...], Callable[[BaseException], str | None]]


def _always(code: str) -> Callable[[BaseException], str | None]:
    return lambda _err: code


def _http_rule(err: BaseException) -> str:
    return code_for_http(_status_of(err), _provider_code(err), str(err))


def _urllib_http_rule(err: BaseException) -> str:
    """urllib's HTTPError is the response itself: its status is ``code``, its body unread."""
    status = getattr(err, "code", None)
    return code_for_http(status if isinstance(status, int) else None, None, str(err))


def database_error_code(err: BaseException) -> str:
    """What a database driver's operational error means, from its message (drivers differ in
    what else they expose; the message is what all of them have)."""
    text = str(err).lower()
    # SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100) and a WAL that cannot grow.
    if any(m in text for m in ("database or disk is full", "no space left on device", "disk full")):
        return "RESOURCE_DISK_FULL"
    if any(m in text for m in ("locked", "deadlock", "could not serialize", "lock timeout")):
        return "DB_LOCKED"
    return "DB_UNAVAILABLE"


_RESOURCE_ERRNO_CODES = {
    errno.ENOSPC: "RESOURCE_DISK_FULL",
    errno.EDQUOT: "RESOURCE_DISK_FULL",
    errno.EMFILE: "RESOURCE_FILE_LIMIT",
    errno.ENFILE: "RESOURCE_FILE_LIMIT",
    errno.ENOMEM: "RESOURCE_MEMORY",
}
_ERRNO_CODES = {
    **_RESOURCE_ERRNO_CODES,
    errno.ECONNREFUSED: "NETWORK_CONNECT_FAILED",
    errno.EHOSTUNREACH: "NETWORK_CONNECT_FAILED",
    errno.ENETUNREACH: "NETWORK_CONNECT_FAILED",
    errno.ECONNRESET: "NETWORK_CONNECTION_RESET",
    errno.EPIPE: "NETWORK_CONNECTION_RESET",
    errno.ETIMEDOUT: "LLM_TIMEOUT",
}


def _os_error(err: BaseException) -> str | None:
    return _ERRNO_CODES.get(getattr(err, "errno", None) or -1)


def _exhausted(err: BaseException) -> str | None:
    """The machine ran out of something: memory, file descriptors, disk. Wherever it sits in the
    chain it is the cause (an SDK wraps an EMFILE socket error as a connection error)."""
    if isinstance(err, MemoryError):
        return "RESOURCE_MEMORY"
    return _RESOURCE_ERRNO_CODES.get(getattr(err, "errno", None) or -1)


def _exact_api_error(*types: type[BaseException]) -> Callable[[BaseException], str | None]:
    """A bare APIError is an error event inside a stream: its body's code decides (a rate limit
    stays a rate limit); without one, the provider failed mid-answer."""

    def decide(err: BaseException) -> str | None:
        if type(err) not in types:
            return None
        code = code_for_http(None, _provider_code(err), str(err))
        return "LLM_PROVIDER_ERROR" if code == "LLM_BAD_REQUEST" else code

    return decide


def _exact(*types: type[BaseException]) -> Callable[[BaseException], str | None]:
    """Matches only these classes themselves (an SDK's bare base class: raised for set-up errors)."""
    return lambda err: "CONFIG_INVALID" if type(err) in types else None


class _NeverRaised(Exception):
    """Stands for the exception classes of an SDK this process never imported: nothing can be an
    instance of them."""


class _AbsentSDK:
    def __getattr__(self, name: str) -> type[BaseException]:
        return _NeverRaised


# Imported only where something else imported them already: an SDK nobody loaded raised nothing,
# and importing anthropic (with httpx2) costs every worker 1.5 s of CPU at start.
OPTIONAL_SDKS = ("anthropic", "httpx2")


def rules() -> tuple[Rule, ...]:
    """The table for the SDKs loaded now (rebuilt, once, when CrewAI loads another one). A module
    another thread is still importing is in sys.modules half-built: it is not loaded yet."""
    return _rules(frozenset(name for name in OPTIONAL_SDKS if _loaded(name)))


def _loaded(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


@cache
def _rules(loaded: frozenset[str]) -> tuple[Rule, ...]:
    import urllib.error

    import httpx
    import openai
    import pydantic
    import requests.exceptions as rq
    import sqlalchemy.exc as sa
    from crewai.agents.parser import OutputParserError
    from crewai.utilities.exceptions.context_window_exceeding_exception import (
        LLMContextLengthExceededError,
    )

    anthropic: Any = sys.modules["anthropic"] if "anthropic" in loaded else _AbsentSDK()
    httpx2: Any = sys.modules["httpx2"] if "httpx2" in loaded else _AbsentSDK()  # anthropic 2.x's httpx fork

    def http(*names: str) -> tuple[type[BaseException], ...]:
        """The named exception classes of httpx and of httpx2 (anthropic's fork of it)."""
        return tuple(getattr(module, name) for module in (httpx, httpx2) for name in names)

    return (
        # crewrun's own errors know their code.
        ((CrewrunError,), lambda err: err.code if isinstance(err, CrewrunError) else None),
        ((MemoryError, OSError), _exhausted),
        # A provider answered with an error status: its code and status decide.
        (
            (openai.APIStatusError, anthropic.APIStatusError, *http("HTTPStatusError"), rq.HTTPError),
            _http_rule,
        ),
        ((urllib.error.HTTPError,), _urllib_http_rule),
        ((LLMContextLengthExceededError,), _always("LLM_CONTEXT_TOO_LONG")),
        ((openai.ContentFilterFinishReasonError,), _always("LLM_CONTENT_REFUSED")),
        # Transport: timeouts before connection errors (APITimeoutError is an APIConnectionError).
        (
            (
                openai.APITimeoutError,
                anthropic.APITimeoutError,
                *http("TimeoutException"),
                rq.Timeout,
                TimeoutError,
            ),
            _always("LLM_TIMEOUT"),
        ),
        ((ssl.SSLError,), _always("NETWORK_TLS_FAILED")),
        ((socket.gaierror,), _always("NETWORK_DNS_FAILED")),
        (
            (
                *http("RemoteProtocolError", "ReadError", "WriteError", "CloseError"),
                ConnectionResetError,
                ConnectionAbortedError,
                BrokenPipeError,
                openai.WebSocketConnectionClosedError,
            ),
            _always("NETWORK_CONNECTION_RESET"),
        ),
        (http("UnsupportedProtocol", "InvalidURL", "TooManyRedirects"), _always("CONFIG_INVALID")),
        # Our own misuse of the HTTP client is a bug, not the network's fault.
        (http("LocalProtocolError"), _always("INTERNAL_ERROR")),
        (
            (
                *http("ConnectError", "ProxyError", "NetworkError", "ProtocolError", "TransportError"),
                ConnectionError,
                rq.ConnectionError,
                urllib.error.URLError,
                openai.APIConnectionError,
                anthropic.APIConnectionError,
            ),
            _always("NETWORK_CONNECT_FAILED"),
        ),
        # The provider answered, but not in a form the agent can use.
        (
            (
                openai.APIResponseValidationError,
                anthropic.APIResponseValidationError,
                openai.LengthFinishReasonError,
                OutputParserError,
                json.JSONDecodeError,
                rq.JSONDecodeError,
                *http("DecodingError"),
                httpx2.SSEError,
            ),
            _always("LLM_OUTPUT_INVALID"),
        ),
        # A bare APIError is an error event inside a stream: the provider failed mid-answer.
        ((anthropic.RetryableError,), _always("LLM_PROVIDER_ERROR")),
        ((openai.APIError, anthropic.APIError), _exact_api_error(openai.APIError, anthropic.APIError)),
        ((anthropic.CredentialsError, anthropic.WorkloadIdentityError), _always("CONFIG_SECRET_MISSING")),
        # The backend database.
        ((sa.TimeoutError,), _always("DB_POOL_TIMEOUT")),
        ((sa.OperationalError, sa.InterfaceError, sa.DisconnectionError), database_error_code),
        ((pydantic.ValidationError,), _always("INPUT_INVALID")),
        # The operating system.
        ((OSError,), _os_error),
        # An SDK's bare base class is what it raises for set-up problems (no API key, bad option).
        (
            (openai.OpenAIError, anthropic.AnthropicError),
            _exact(openai.OpenAIError, anthropic.AnthropicError),
        ),
    )


def mapped_types() -> set[type[BaseException]]:
    return {t for types, _ in rules() for t in types} - {_NeverRaised}


# What a code means when a tool's call failed: the service of a tool, not an LLM provider. Codes
# that are not about the provider (network, resources, the database, the breaker) stay.
# fmt: off
TOOL_CODES: dict[str, str] = {
    "LLM_RATE_LIMITED":        "TOOL_RATE_LIMITED",
    "LLM_PROVIDER_ERROR":      "TOOL_SERVICE_ERROR",
    "LLM_PROVIDER_OVERLOADED": "TOOL_SERVICE_ERROR",
    "LLM_TIMEOUT":             "TOOL_TIMEOUT",
    "LLM_AUTH_FAILED":         "TOOL_AUTH_FAILED",
    "LLM_PERMISSION_DENIED":   "TOOL_AUTH_FAILED",
    "LLM_QUOTA_EXHAUSTED":     "TOOL_QUOTA_EXHAUSTED",
    "LLM_BAD_REQUEST":         "TOOL_ARGUMENTS_INVALID",
    "INPUT_INVALID":           "TOOL_ARGUMENTS_INVALID",
    "LLM_CONTEXT_TOO_LONG":    "TOOL_ARGUMENTS_INVALID",
    "CONFIG_MODEL_UNKNOWN":    "TOOL_NOT_FOUND",
    "LLM_CONTENT_REFUSED":     "TOOL_REQUEST_REFUSED",
    "LLM_OUTPUT_INVALID":      "TOOL_RESPONSE_INVALID",
    "INTERNAL_ERROR":          "TOOL_FAILED",
}
# fmt: on


def classify(exc: BaseException, *, tool: bool = False) -> Classification:
    errors = list(chain(exc))
    for types, decide in rules():
        for err in errors:
            if isinstance(err, types) and (code := decide(err)) is not None:
                return _classification(_for_tool(code, err) if tool else code, err, errors)
    return _classification(TOOL_CODES["INTERNAL_ERROR"] if tool else "INTERNAL_ERROR", exc, errors)


def _for_tool(code: str, matched: BaseException) -> str:
    # crewrun's own errors (a breaker's refusal, a tool timeout) already name what they mean.
    return code if isinstance(matched, CrewrunError) else TOOL_CODES.get(code, code)


def _classification(code: str, matched: BaseException, errors: list[BaseException]) -> Classification:
    retry_after: float | None = None
    status: int | None = None
    provider_code: str | None = None
    for err in errors:  # the first response in the chain carries status and headers
        if isinstance(err, CrewrunError) and err.retry_after_s is not None:
            retry_after = _capped(err.retry_after_s)
        response = getattr(err, "response", None)
        if response is None and _is_urllib_http_error(err):
            response = err  # urllib's HTTPError is its own response: status in code, headers
        if response is not None and status is None:
            status = _status_of(err)
            provider_code = _provider_code(err)
            headers = getattr(response, "headers", None)
            retry_after = retry_after if retry_after is not None else retry_after_from_headers(headers)
    return Classification(lookup(code), matched, status, provider_code, retry_after)


def _is_urllib_http_error(err: BaseException) -> bool:
    import urllib.error

    return isinstance(err, urllib.error.HTTPError)


def _capped(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
