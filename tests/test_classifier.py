"""Classification of real exception objects from the libraries crewrun meets (openai, anthropic,
httpx and anthropic's fork httpx2, crewai, sqlalchemy, pydantic, the OS) into registry codes, the
Retry-After parsing, and the mapping-completeness guard: a new exception class in
openai/anthropic/httpx/httpx2 fails this file until a rule (or a deliberate "internal" entry below)
covers it."""

from __future__ import annotations

import errno
import importlib.machinery
import inspect
import json
import socket
import ssl
import subprocess
import sys
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import anthropic
import httpx
import httpx2
import openai
import pydantic
import pytest
import sqlalchemy.exc as sa
from crewai.agents.parser import OutputParserError
from crewai.utilities.exceptions.context_window_exceeding_exception import LLMContextLengthExceededError
from openai.types.chat import ChatCompletion

from backend.exceptions import classifier, execution_errors
from backend.exceptions.classifier import (
    MAX_CHAIN,
    MAX_RETRY_AFTER_S,
    chain,
    classify,
    code_for_http,
    mapped_types,
    qualified_name,
    retry_after_from_headers,
    rules,
)
from backend.exceptions.codes import _REGISTRY, REGISTRY
from backend.exceptions.execution_errors import (
    CircuitOpenError,
    ConfigurationError,
    ContextLengthError,
    CrewrunError,
)

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


# ---------------------------------------------------------------- builders of real exceptions


def openai_request() -> httpx.Request:
    return httpx.Request("POST", OPENAI_URL)


def anthropic_request() -> httpx2.Request:
    # anthropic 2.x sends its requests through httpx2, so its errors carry httpx2 objects.
    return httpx2.Request("POST", ANTHROPIC_URL)


def openai_status_error(
    cls: type[openai.APIStatusError],
    status: int,
    message: str,
    *,
    type_: str | None = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    """What openai's client raises: the message holds the whole body, ``body`` is body["error"]."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    resp = httpx.Response(status, json=body, headers=headers or {}, request=openai_request())
    return cls(f"Error code: {status} - {body}", response=resp, body=body["error"])


def anthropic_status_error(
    cls: type[anthropic.APIStatusError],
    status: int,
    type_: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
) -> anthropic.APIStatusError:
    """What anthropic's client raises: ``body`` is the whole JSON body."""
    body = {"type": "error", "error": {"type": type_, "message": message}}
    resp = httpx2.Response(status, json=body, headers=headers or {}, request=anthropic_request())
    return cls(f"Error code: {status} - {body}", response=resp, body=body)


def http_status_error(status: int, *, json_body: Any = None, text: str | None = None, **headers: str):
    req = openai_request()
    if json_body is not None:
        resp = httpx.Response(status, json=json_body, headers=headers, request=req)
    else:
        resp = httpx.Response(status, text=text or "", headers=headers, request=req)
    return httpx.HTTPStatusError(
        f"Server error '{status}' for url '{OPENAI_URL}'", request=req, response=resp
    )


def httpx2_status_error(status: int, *, json_body: Any = None, text: str | None = None, **headers: str):
    """What anthropic's transport raises on ``raise_for_status()``."""
    req = anthropic_request()
    if json_body is not None:
        resp = httpx2.Response(status, json=json_body, headers=headers, request=req)
    else:
        resp = httpx2.Response(status, text=text or "", headers=headers, request=req)
    return httpx2.HTTPStatusError(
        f"Server error '{status}' for url '{ANTHROPIC_URL}'", request=req, response=resp
    )


def openai_stream_error() -> openai.APIError:
    """What openai's stream raises for an ``error`` event: a bare APIError, no response."""
    return openai.APIError(
        "The server had an error while processing your request.",
        openai_request(),
        body={"message": "The server had an error while processing your request.", "type": "server_error"},
    )


def chat_completion(finish_reason: str) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason,
                    "message": {"role": "assistant", "content": "The answer is"},
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 16, "total_tokens": 116},
        }
    )


class _Model(pydantic.BaseModel):
    count: int
    name: str


def pydantic_error() -> pydantic.ValidationError:
    try:
        _Model.model_validate({"count": "many"})
    except pydantic.ValidationError as err:
        return err
    raise AssertionError("validation passed")


def raised(build: Callable[[], BaseException]) -> BaseException:
    """The exception ``build`` raises (so chains get their real ``__cause__``/``__context__``)."""
    try:
        build()
    except BaseException as err:  # noqa: BLE001 - SystemExit included on purpose
        return err
    raise AssertionError("nothing raised")


def _raise(exc: BaseException, cause: BaseException | None = None) -> None:
    raise exc from cause


def runtime_error_from_rate_limit() -> BaseException:
    inner = openai_status_error(
        openai.RateLimitError,
        429,
        "Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 3.",
        type_="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": "30"},
    )
    return raised(lambda: _raise(RuntimeError("crew task failed"), inner))


def connection_error_from_reset() -> BaseException:
    def build() -> None:
        try:
            try:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            except httpx.RemoteProtocolError as proto:
                raise openai.APIConnectionError(request=openai_request()) from proto
        except openai.APIConnectionError as conn:
            raise ConnectionError("Failed to connect") from conn

    return raised(build)


def system_exit_during_context_error() -> BaseException:
    def build() -> None:
        try:
            raise LLMContextLengthExceededError("This model's maximum context length is 8192 tokens.")
        except LLMContextLengthExceededError:
            raise SystemExit(3)  # noqa: B904 - the implicit __context__ is the point

    return raised(build)


def crewrun_error_from_provider_429() -> BaseException:
    inner = openai_status_error(
        openai.RateLimitError,
        429,
        "Rate limit reached.",
        type_="tokens",
        code="rate_limit_exceeded",
        headers={"retry-after": "30"},
    )
    return raised(
        lambda: _raise(CrewrunError("parked by crewrun", code="LLM_RATE_LIMITED", retry_after_s=7), inner)
    )


def tls_under_connect_error() -> BaseException:
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    connect = raised(lambda: _raise(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]"), cert))
    return raised(lambda: _raise(openai.APIConnectionError(request=openai_request()), connect))


def dns_under_connect_error() -> BaseException:
    dns = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    connect = raised(lambda: _raise(httpx.ConnectError("[Errno -2] Name or service not known"), dns))
    return raised(lambda: _raise(openai.APIConnectionError(request=openai_request()), connect))


class NoText:
    """A ``response`` without ``.text``/``.headers``/``status_code`` (some SDKs attach odd ones)."""


class OddResponseError(Exception):
    """A foreign exception with a ``response`` attribute that is no HTTP response."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.response = NoText()


# ---------------------------------------------------------------- the corpus


class Expect(NamedTuple):
    code: str
    category: str
    status: int | None = None
    provider_code: str | None = None
    retry_after_s: float | None = None


def case(build: Callable[[], BaseException], expect: Expect, id: str) -> Any:
    return pytest.param(build, expect, id=id)


CORPUS = [
    # ------------------------------------------------------------ openai status errors
    case(
        lambda: openai_status_error(
            openai.BadRequestError,
            400,
            "This model's maximum context length is 128000 tokens. However, your messages resulted "
            "in 130512 tokens. Please reduce the length of the messages.",
            code="context_length_exceeded",
        ),
        Expect("LLM_CONTEXT_TOO_LONG", "context_length", 400, "context_length_exceeded"),
        "openai-400-context_length_exceeded",
    ),
    case(
        lambda: openai_status_error(
            openai.BadRequestError,
            400,
            "Your request was rejected as a result of our safety system.",
            code="content_policy_violation",
        ),
        Expect("LLM_CONTENT_REFUSED", "content_policy", 400, "content_policy_violation"),
        "openai-400-content_policy_violation",
    ),
    case(
        lambda: openai_status_error(
            openai.BadRequestError, 400, "Unrecognized request argument supplied: temperatur", code=None
        ),
        Expect("LLM_BAD_REQUEST", "validation", 400, "invalid_request_error"),
        "openai-400-no-code",
    ),
    case(
        lambda: openai_status_error(
            openai.AuthenticationError,
            401,
            "Incorrect API key provided: sk-abc***xyz. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        ),
        Expect("LLM_AUTH_FAILED", "authentication", 401, "invalid_api_key"),
        "openai-401",
    ),
    case(
        lambda: openai_status_error(
            openai.PermissionDeniedError,
            403,
            "Country, region, or territory not supported",
            type_="request_forbidden",
            code="unsupported_country_region_territory",
        ),
        Expect("LLM_PERMISSION_DENIED", "authentication", 403, "unsupported_country_region_territory"),
        "openai-403",
    ),
    case(
        lambda: openai_status_error(
            openai.NotFoundError,
            404,
            "The model `gpt-9` does not exist or you do not have access to it.",
            code="model_not_found",
        ),
        Expect("CONFIG_MODEL_UNKNOWN", "configuration", 404, "model_not_found"),
        "openai-404-model_not_found",
    ),
    case(
        lambda: openai_status_error(
            openai.ConflictError, 409, "Another request is modifying this resource.", type_="conflict"
        ),
        Expect("LLM_PROVIDER_ERROR", "external_service", 409, "conflict"),
        "openai-409",
    ),
    case(
        lambda: openai_status_error(
            openai.UnprocessableEntityError, 422, "Invalid value for 'response_format'.", code=None
        ),
        Expect("LLM_BAD_REQUEST", "validation", 422, "invalid_request_error"),
        "openai-422",
    ),
    case(
        lambda: openai_status_error(
            openai.RateLimitError,
            429,
            "Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s.",
            type_="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": "20"},
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_exceeded", 20.0),
        "openai-429-retry-after",
    ),
    case(
        lambda: openai_status_error(
            openai.RateLimitError,
            429,
            "Rate limit reached for gpt-4o on tokens per min (TPM).",
            type_="tokens",
            code="rate_limit_exceeded",
            headers={"retry-after-ms": "1500"},
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_exceeded", 1.5),
        "openai-429-retry-after-ms",
    ),
    case(
        lambda: openai_status_error(
            openai.RateLimitError,
            429,
            "Rate limit reached for gpt-4o on requests per day (RPD).",
            type_="requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": "20",
                "retry-after-ms": "20500",
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-reset-tokens": "1s",
            },
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_exceeded", 360.0),
        "openai-429-reset-headers-longest-wins",
    ),
    case(
        lambda: openai_status_error(
            openai.RateLimitError,
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type_="insufficient_quota",
            code="insufficient_quota",
        ),
        Expect("LLM_QUOTA_EXHAUSTED", "quota_exhausted", 429, "insufficient_quota"),
        "openai-429-insufficient_quota",
    ),
    case(
        lambda: openai_status_error(
            openai.InternalServerError,
            500,
            "The server had an error while processing your request. Sorry about that!",
            type_="server_error",
        ),
        Expect("LLM_PROVIDER_ERROR", "external_service", 500, "server_error"),
        "openai-500",
    ),
    case(
        lambda: openai_status_error(
            openai.InternalServerError,
            503,
            "The engine is currently overloaded, please try again later.",
            type_="server_error",
        ),
        Expect("LLM_PROVIDER_OVERLOADED", "external_service", 503, "server_error"),
        "openai-503",
    ),
    case(
        lambda: openai.OAuthError(
            response=httpx.Response(
                401, json={"error": "invalid_client"}, request=httpx.Request("POST", OPENAI_URL)
            ),
            body={"error": "invalid_client"},
        ),
        Expect("LLM_AUTH_FAILED", "authentication", 401, None),
        "openai-oauth-401",
    ),
    # ------------------------------------------------------------ openai, no status
    case(
        lambda: openai.APIConnectionError(request=openai_request()),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "openai-connection",
    ),
    case(
        lambda: openai.APITimeoutError(request=openai_request()),
        Expect("LLM_TIMEOUT", "timeout"),
        "openai-timeout",
    ),
    case(
        lambda: openai.APIResponseValidationError(
            response=httpx.Response(200, json={"id": "chatcmpl-1"}, request=openai_request()),
            body={"id": "chatcmpl-1", "choices": "not a list"},
        ),
        Expect("LLM_OUTPUT_INVALID", "llm_output", 200, None),
        "openai-response-validation",
    ),
    case(
        lambda: openai.LengthFinishReasonError(completion=chat_completion("length")),
        Expect("LLM_OUTPUT_INVALID", "llm_output"),
        "openai-length-finish-reason",
    ),
    case(
        lambda: openai.ContentFilterFinishReasonError(),
        Expect("LLM_CONTENT_REFUSED", "content_policy"),
        "openai-content-filter-finish-reason",
    ),
    case(
        lambda: openai.OpenAIError(
            "The api_key client option must be set either by passing api_key to the client or by "
            "setting the OPENAI_API_KEY environment variable"
        ),
        Expect("CONFIG_INVALID", "configuration"),
        "openai-bare-OpenAIError",
    ),
    # A stream's error event: a bare APIError (matched as that exact class only).
    case(
        openai_stream_error, Expect("LLM_PROVIDER_ERROR", "external_service"), "openai-stream-bare-APIError"
    ),
    case(
        lambda: raised(lambda: _raise(RuntimeError("crew task failed"), openai_stream_error())),
        Expect("LLM_PROVIDER_ERROR", "external_service"),
        "chain-runtime-from-openai-stream-APIError",
    ),
    case(
        lambda: openai.WebSocketConnectionClosedError("connection closed", unsent_messages=["{}"]),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "openai-websocket-closed",
    ),
    # An OpenAIError subclass is not covered by the bare-class rule: it matches the class itself only.
    case(
        lambda: openai.WebSocketQueueFullError("send queue is full, message discarded"),
        Expect("INTERNAL_ERROR", "internal"),
        "openai-subclass-not-caught-by-bare-rule",
    ),
    # ------------------------------------------------------------ anthropic status errors
    case(
        lambda: anthropic_status_error(
            anthropic.RateLimitError,
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            headers={"retry-after": "12", "anthropic-ratelimit-requests-reset": "2020-01-01T00:00:00Z"},
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_error", 12.0),
        "anthropic-429",
    ),
    case(
        lambda: anthropic_status_error(anthropic.OverloadedError, 529, "overloaded_error", "Overloaded"),
        Expect("LLM_PROVIDER_OVERLOADED", "external_service", 529, "overloaded_error"),
        "anthropic-529-overloaded",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.AuthenticationError, 401, "authentication_error", "invalid x-api-key"
        ),
        Expect("LLM_AUTH_FAILED", "authentication", 401, "authentication_error"),
        "anthropic-401",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.PermissionDeniedError,
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        Expect("LLM_PERMISSION_DENIED", "authentication", 403, "permission_error"),
        "anthropic-403",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.NotFoundError, 404, "not_found_error", "model: claude-9-opus"
        ),
        Expect("CONFIG_MODEL_UNKNOWN", "configuration", 404, "not_found_error"),
        "anthropic-404",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.ContentTooLargeError, 413, "request_too_large", "Request exceeds the maximum size"
        ),
        Expect("LLM_CONTEXT_TOO_LONG", "context_length", 413, "request_too_large"),
        "anthropic-413",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.BadRequestError, 400, "invalid_request_error", "max_tokens: Field required"
        ),
        Expect("LLM_BAD_REQUEST", "validation", 400, "invalid_request_error"),
        "anthropic-400",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "prompt is too long: 212345 tokens > 200000 maximum",
        ),
        Expect("LLM_CONTEXT_TOO_LONG", "context_length", 400, "invalid_request_error"),
        "anthropic-400-prompt-too-long",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        Expect("LLM_QUOTA_EXHAUSTED", "quota_exhausted", 400, "invalid_request_error"),
        "anthropic-400-credit-balance",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.PaymentRequiredError, 402, "billing_error", "Billing issue on your account"
        ),
        Expect("LLM_QUOTA_EXHAUSTED", "quota_exhausted", 402, "billing_error"),
        "anthropic-402-billing",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.InternalServerError, 500, "api_error", "Internal server error"
        ),
        Expect("LLM_PROVIDER_ERROR", "external_service", 500, "api_error"),
        "anthropic-500",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.GatewayTimeoutError, 504, "timeout_error", "Request timed out"
        ),
        Expect("LLM_TIMEOUT", "timeout", 504, "timeout_error"),
        "anthropic-504",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.RateLimitError,
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            headers={"retry-after": "inf"},
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_error", 86_400.0),
        "anthropic-429-retry-after-inf-capped",
    ),
    # An error event inside a 200 stream: anthropic raises APIStatusError with the stream's status.
    case(
        lambda: anthropic_status_error(anthropic.APIStatusError, 200, "api_error", "Internal server error"),
        Expect("LLM_PROVIDER_ERROR", "external_service", 200, "api_error"),
        "anthropic-200-stream-api_error",
    ),
    case(
        lambda: anthropic_status_error(anthropic.APIStatusError, 200, "overloaded_error", "Overloaded"),
        Expect("LLM_PROVIDER_OVERLOADED", "external_service", 200, "overloaded_error"),
        "anthropic-200-stream-overloaded_error",
    ),
    case(
        lambda: anthropic_status_error(anthropic.APIStatusError, 200, "timeout_error", "Request timed out"),
        Expect("LLM_TIMEOUT", "timeout", 200, "timeout_error"),
        "anthropic-200-stream-timeout_error",
    ),
    case(
        lambda: anthropic_status_error(
            anthropic.APIStatusError, 200, "invalid_request_error", "messages: roles must alternate"
        ),
        Expect("LLM_BAD_REQUEST", "validation", 200, "invalid_request_error"),
        "anthropic-200-stream-invalid_request_error",
    ),
    # ------------------------------------------------------------ anthropic, no status
    case(
        lambda: anthropic.APIError("stream failed", anthropic_request(), body=None),
        Expect("LLM_PROVIDER_ERROR", "external_service"),
        "anthropic-bare-APIError",
    ),
    case(
        lambda: anthropic.APIConnectionError(request=anthropic_request()),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "anthropic-connection",
    ),
    case(
        lambda: anthropic.APITimeoutError(request=anthropic_request()),
        Expect("LLM_TIMEOUT", "timeout"),
        "anthropic-timeout",
    ),
    case(
        lambda: anthropic.CredentialsError("Could not resolve authentication method."),
        Expect("CONFIG_SECRET_MISSING", "configuration"),
        "anthropic-credentials",
    ),
    case(
        lambda: anthropic.IdentityTokenFileError("identity token file is empty"),
        Expect("CONFIG_SECRET_MISSING", "configuration"),
        "anthropic-identity-token-file",
    ),
    case(
        lambda: anthropic.RetryableError("retry me"),
        Expect("LLM_PROVIDER_ERROR", "external_service"),
        "anthropic-retryable",
    ),
    case(
        lambda: anthropic.APIResponseValidationError(
            response=httpx2.Response(200, json={"id": "msg_1"}, request=anthropic_request()),
            body={"id": "msg_1", "content": 3},
        ),
        Expect("LLM_OUTPUT_INVALID", "llm_output", 200, None),
        "anthropic-response-validation",
    ),
    case(
        lambda: anthropic.AnthropicError("base_url must be set"),
        Expect("CONFIG_INVALID", "configuration"),
        "anthropic-bare-AnthropicError",
    ),
    # ------------------------------------------------------------ httpx
    case(
        lambda: httpx.ConnectError("All connection attempts failed", request=openai_request()),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "httpx-ConnectError",
    ),
    case(
        lambda: httpx.ConnectTimeout("timed out", request=openai_request()),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx-ConnectTimeout",
    ),
    case(
        lambda: httpx.ReadTimeout("The read operation timed out", request=openai_request()),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx-ReadTimeout",
    ),
    case(
        lambda: httpx.WriteTimeout("The write operation timed out"),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx-WriteTimeout",
    ),
    case(
        lambda: httpx.PoolTimeout("no connection available in the pool"),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx-PoolTimeout",
    ),
    case(
        lambda: httpx.RemoteProtocolError("Server disconnected without sending a response."),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "httpx-RemoteProtocolError",
    ),
    case(
        lambda: httpx.ReadError("[Errno 104] Connection reset by peer"),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "httpx-ReadError",
    ),
    case(
        lambda: httpx.WriteError("[Errno 32] Broken pipe"),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "httpx-WriteError",
    ),
    case(
        lambda: httpx.CloseError("error while closing"),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "httpx-CloseError",
    ),
    case(
        lambda: httpx.ProxyError("407 Proxy Authentication Required"),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "httpx-ProxyError",
    ),
    case(
        lambda: httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
        Expect("CONFIG_INVALID", "configuration"),
        "httpx-UnsupportedProtocol",
    ),
    case(
        lambda: httpx.InvalidURL("Invalid port: 'abc'"),
        Expect("CONFIG_INVALID", "configuration"),
        "httpx-InvalidURL",
    ),
    case(
        lambda: httpx.TooManyRedirects("Exceeded maximum allowed redirects."),
        Expect("CONFIG_INVALID", "configuration"),
        "httpx-TooManyRedirects",
    ),
    case(
        lambda: httpx.DecodingError("Error -3 while decompressing data: incorrect header check"),
        Expect("LLM_OUTPUT_INVALID", "llm_output"),
        "httpx-DecodingError",
    ),
    case(
        lambda: http_status_error(
            429,
            json_body={"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
            **{"retry-after": "3"},
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_exceeded", 3.0),
        "httpx-HTTPStatusError-429",
    ),
    case(
        lambda: http_status_error(502, text="<html><body>502 Bad Gateway</body></html>"),
        Expect("LLM_PROVIDER_ERROR", "external_service", 502, None),
        "httpx-HTTPStatusError-502-html",
    ),
    case(
        lambda: http_status_error(503, json_body=["not", "a", "dict"]),
        Expect("LLM_PROVIDER_OVERLOADED", "external_service", 503, None),
        "httpx-HTTPStatusError-503-list-body",
    ),
    case(
        lambda: http_status_error(500, json_body={"error": "boom"}),
        Expect("LLM_PROVIDER_ERROR", "external_service", 500, None),
        "httpx-HTTPStatusError-500-string-error",
    ),
    case(
        lambda: http_status_error(400, json_body={"type": "error"}),
        Expect("LLM_BAD_REQUEST", "validation", 400, None),
        "httpx-HTTPStatusError-400-type-error-only",
    ),
    case(
        lambda: httpx.HTTPStatusError(
            "Server error '502 Bad Gateway'",
            request=openai_request(),
            response=httpx.Response(502, stream=httpx.ByteStream(b"{}"), request=openai_request()),
        ),
        Expect("LLM_PROVIDER_ERROR", "external_service", 502, None),
        "httpx-HTTPStatusError-unread-stream",
    ),
    # Our own misuse of the client (an illegal header value, ...): a bug, INTERNAL on purpose.
    case(
        lambda: httpx.LocalProtocolError("Illegal header value b'Bearer abc\\n'"),
        Expect("INTERNAL_ERROR", "internal"),
        "httpx-LocalProtocolError-is-internal",
    ),
    case(
        lambda: raised(
            lambda: _raise(
                openai.APIConnectionError(request=openai_request()),
                httpx.LocalProtocolError("Illegal header value"),
            )
        ),
        Expect("INTERNAL_ERROR", "internal"),
        "chain-apiconnection-from-LocalProtocolError-is-internal",
    ),
    # ------------------------------------------------------------ httpx2 (anthropic's transport)
    case(
        lambda: httpx2.ConnectTimeout("timed out", request=anthropic_request()),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx2-ConnectTimeout",
    ),
    case(
        lambda: httpx2.ReadTimeout("The read operation timed out", request=anthropic_request()),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx2-ReadTimeout",
    ),
    case(
        lambda: httpx2.WriteTimeout("The write operation timed out"),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx2-WriteTimeout",
    ),
    case(
        lambda: httpx2.PoolTimeout("no connection available in the pool"),
        Expect("LLM_TIMEOUT", "timeout"),
        "httpx2-PoolTimeout",
    ),
    case(
        lambda: httpx2.LocalProtocolError("Illegal header value b'Bearer abc\\n'"),
        Expect("INTERNAL_ERROR", "internal"),
        "httpx2-LocalProtocolError-is-internal",
    ),
    case(
        lambda: raised(
            lambda: _raise(
                anthropic.APIConnectionError(request=anthropic_request()),
                httpx2.LocalProtocolError("Illegal header value"),
            )
        ),
        Expect("INTERNAL_ERROR", "internal"),
        "chain-anthropic-connection-from-httpx2-LocalProtocolError-is-internal",
    ),
    case(
        lambda: httpx2_status_error(
            429,
            json_body={"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            **{"retry-after": "3"},
        ),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_error", 3.0),
        "httpx2-HTTPStatusError-429",
    ),
    case(
        lambda: httpx2_status_error(
            500,
            json_body={"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
        ),
        Expect("LLM_PROVIDER_ERROR", "external_service", 500, "api_error"),
        "httpx2-HTTPStatusError-500-api_error",
    ),
    case(
        lambda: httpx2_status_error(502, text="<html><body>502 Bad Gateway</body></html>"),
        Expect("LLM_PROVIDER_ERROR", "external_service", 502, None),
        "httpx2-HTTPStatusError-502-html",
    ),
    case(
        lambda: httpx2_status_error(429, text="", **{"retry-after": "1e15"}),
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, None, 86_400.0),
        "httpx2-HTTPStatusError-429-huge-retry-after-capped",
    ),
    # ------------------------------------------------------------ crewai
    case(
        lambda: LLMContextLengthExceededError("This model's maximum context length is 8192 tokens."),
        Expect("LLM_CONTEXT_TOO_LONG", "context_length"),
        "crewai-context-length",
    ),
    case(
        lambda: OutputParserError("Invalid Format: I missed the 'Action:' after 'Thought:'."),
        Expect("LLM_OUTPUT_INVALID", "llm_output"),
        "crewai-output-parser",
    ),
    # ------------------------------------------------------------ sqlalchemy and pydantic
    case(
        lambda: sa.OperationalError("SELECT 1", {}, Exception("database is locked")),
        Expect("DB_LOCKED", "database"),
        "sqlalchemy-locked",
    ),
    case(
        lambda: sa.OperationalError("UPDATE runs", {}, Exception("deadlock detected")),
        Expect("DB_LOCKED", "database"),
        "sqlalchemy-deadlock",
    ),
    case(
        lambda: sa.OperationalError(
            "SELECT 1",
            {},
            Exception('connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
        ),
        Expect("DB_UNAVAILABLE", "database"),
        "sqlalchemy-connection-refused",
    ),
    case(
        lambda: sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
        Expect("DB_POOL_TIMEOUT", "database"),
        "sqlalchemy-pool-timeout",
    ),
    case(
        lambda: sa.InterfaceError("SELECT 1", {}, Exception("connection already closed")),
        Expect("DB_UNAVAILABLE", "database"),
        "sqlalchemy-interface",
    ),
    case(
        lambda: sa.DisconnectionError("connection invalidated"),
        Expect("DB_UNAVAILABLE", "database"),
        "sqlalchemy-disconnection",
    ),
    # An integrity violation is a bug of crewrun (or a race it should handle), not an outage.
    case(
        lambda: sa.IntegrityError("INSERT INTO crews", {}, Exception("UNIQUE constraint failed: crews.name")),
        Expect("INTERNAL_ERROR", "internal"),
        "sqlalchemy-integrity-is-internal",
    ),
    case(pydantic_error, Expect("INPUT_INVALID", "validation"), "pydantic-validation"),
    # ------------------------------------------------------------ the operating system
    case(
        lambda: OSError(errno.ENOSPC, "No space left on device"),
        Expect("RESOURCE_DISK_FULL", "resource_exhaustion"),
        "os-ENOSPC",
    ),
    case(
        lambda: OSError(errno.EDQUOT, "Disk quota exceeded"),
        Expect("RESOURCE_DISK_FULL", "resource_exhaustion"),
        "os-EDQUOT",
    ),
    case(
        lambda: OSError(errno.EMFILE, "Too many open files"),
        Expect("RESOURCE_FILE_LIMIT", "resource_exhaustion"),
        "os-EMFILE",
    ),
    case(
        lambda: OSError(errno.ENFILE, "Too many open files in system"),
        Expect("RESOURCE_FILE_LIMIT", "resource_exhaustion"),
        "os-ENFILE",
    ),
    case(
        lambda: OSError(errno.ENOMEM, "Cannot allocate memory"),
        Expect("RESOURCE_MEMORY", "resource_exhaustion"),
        "os-ENOMEM",
    ),
    case(
        lambda: OSError(errno.ECONNREFUSED, "Connection refused"),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "os-ECONNREFUSED",
    ),
    case(
        lambda: OSError(errno.ECONNRESET, "Connection reset by peer"),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "os-ECONNRESET",
    ),
    case(
        lambda: OSError(errno.EHOSTUNREACH, "No route to host"),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "os-EHOSTUNREACH",
    ),
    case(
        lambda: OSError(errno.ENETUNREACH, "Network is unreachable"),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "os-ENETUNREACH",
    ),
    case(
        lambda: OSError(errno.ETIMEDOUT, "Connection timed out"),
        Expect("LLM_TIMEOUT", "timeout"),
        "os-ETIMEDOUT",
    ),
    case(
        lambda: OSError(errno.EACCES, "Permission denied"),
        Expect("INTERNAL_ERROR", "internal"),
        "os-EACCES-unmapped-errno",
    ),
    case(lambda: OSError("no errno at all"), Expect("INTERNAL_ERROR", "internal"), "os-no-errno"),
    case(
        lambda: ConnectionRefusedError("[Errno 111] Connection refused"),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "ConnectionRefusedError",
    ),
    case(
        lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"),
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "BrokenPipeError",
    ),
    case(
        lambda: socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        Expect("NETWORK_DNS_FAILED", "network"),
        "socket-gaierror",
    ),
    case(
        lambda: ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
        Expect("NETWORK_TLS_FAILED", "network"),
        "ssl-SSLError",
    ),
    case(
        lambda: ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]"),
        Expect("NETWORK_TLS_FAILED", "network"),
        "ssl-SSLCertVerificationError",
    ),
    case(lambda: TimeoutError(), Expect("LLM_TIMEOUT", "timeout"), "TimeoutError"),
    case(lambda: MemoryError(), Expect("RESOURCE_MEMORY", "resource_exhaustion"), "MemoryError"),
    # Exhaustion is the cause wherever it sits: the SDK wraps it as a connection error.
    case(
        lambda: raised(lambda: _raise(openai.APIConnectionError(request=openai_request()), MemoryError())),
        Expect("RESOURCE_MEMORY", "resource_exhaustion"),
        "openai-connection-error-from-MemoryError",
    ),
    case(
        lambda: raised(
            lambda: _raise(
                openai.APIConnectionError(request=openai_request()),
                httpx.ConnectError("[Errno 24] Too many open files"),
            )
        ),
        Expect("NETWORK_CONNECT_FAILED", "network"),
        "openai-connection-error-EMFILE-text-only",
    ),
    case(
        lambda: raised(
            lambda: _raise(
                openai.APIConnectionError(request=openai_request()),
                OSError(errno.EMFILE, "Too many open files"),
            )
        ),
        Expect("RESOURCE_FILE_LIMIT", "resource_exhaustion"),
        "openai-connection-error-from-EMFILE",
    ),
    case(
        lambda: sa.OperationalError("INSERT INTO error_events", {}, Exception("database or disk is full")),
        Expect("RESOURCE_DISK_FULL", "resource_exhaustion"),
        "sqlite-database-or-disk-is-full",
    ),
    case(
        lambda: sa.OperationalError(
            "INSERT INTO task_runs",
            {},
            Exception('could not extend file "base/16384/16397": No space left on device'),
        ),
        Expect("RESOURCE_DISK_FULL", "resource_exhaustion"),
        "postgresql-disk-full",
    ),
    case(
        lambda: json.JSONDecodeError("Expecting value", "Sure! Here is the JSON:", 0),
        Expect("LLM_OUTPUT_INVALID", "llm_output"),
        "json-JSONDecodeError",
    ),
    case(lambda: KeyError("result"), Expect("INTERNAL_ERROR", "internal"), "KeyError"),
    case(
        lambda: TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
        Expect("INTERNAL_ERROR", "internal"),
        "TypeError",
    ),
    case(
        lambda: OddResponseError("odd"),
        Expect("INTERNAL_ERROR", "internal"),
        "foreign-error-with-odd-response",
    ),
    # ------------------------------------------------------------ crewrun's own
    case(
        lambda: CrewrunError("x", code="LLM_RATE_LIMITED", retry_after_s=7),
        Expect("LLM_RATE_LIMITED", "rate_limit", retry_after_s=7),
        "crewrun-error-with-a-rate-limit-code",
    ),
    case(
        lambda: ConfigurationError("x", code="CONFIG_SECRET_MISSING"),
        Expect("CONFIG_SECRET_MISSING", "configuration"),
        "crewrun-ConfigurationError-code",
    ),
    case(
        lambda: CircuitOpenError("circuit of openai is open", service="openai"),
        Expect("CIRCUIT_OPEN", "circuit_open"),
        "crewrun-CircuitOpenError",
    ),
    # ------------------------------------------------------------ chains
    case(
        runtime_error_from_rate_limit,
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_exceeded", 30.0),
        "chain-runtime-from-openai-429",
    ),
    case(
        connection_error_from_reset,
        Expect("NETWORK_CONNECTION_RESET", "network"),
        "chain-connection-from-apiconnection-from-remote-protocol",
    ),
    case(
        system_exit_during_context_error,
        Expect("LLM_CONTEXT_TOO_LONG", "context_length"),
        "chain-systemexit-implicit-context",
    ),
    case(
        crewrun_error_from_provider_429,
        Expect("LLM_RATE_LIMITED", "rate_limit", 429, "rate_limit_exceeded", 7),
        "chain-crewrun-retry-after-beats-header",
    ),
    case(tls_under_connect_error, Expect("NETWORK_TLS_FAILED", "network"), "chain-tls-under-connect"),
    case(dns_under_connect_error, Expect("NETWORK_DNS_FAILED", "network"), "chain-dns-under-connect"),
]


@pytest.mark.parametrize(("build", "expect"), CORPUS)
def test_classify_corpus(build: Callable[[], BaseException], expect: Expect) -> None:
    found = classify(build())

    assert (found.code, found.category) == (expect.code, expect.category)
    assert found.entry is REGISTRY[expect.code]
    assert found.status_code == expect.status
    assert found.provider_code == expect.provider_code
    assert found.retry_after_s == expect.retry_after_s


def test_classify_reports_the_exception_of_the_chain_that_decided() -> None:
    outer = connection_error_from_reset()
    proto = outer.__cause__.__cause__  # type: ignore[union-attr]

    found = classify(outer)

    assert isinstance(proto, httpx.RemoteProtocolError)
    assert found.matched is proto


def test_classify_of_wrapped_rate_limit_matches_the_provider_error() -> None:
    outer = runtime_error_from_rate_limit()

    found = classify(outer)

    assert found.matched is outer.__cause__
    assert isinstance(found.matched, openai.RateLimitError)


def test_classify_unknown_error_matches_the_outermost_exception() -> None:
    err = raised(lambda: _raise(KeyError("a"), TypeError("b")))

    found = classify(err)

    assert found.code == "INTERNAL_ERROR"
    assert found.matched is err


def test_system_exit_chain_is_implicit_context() -> None:
    err = system_exit_during_context_error()

    assert isinstance(err, SystemExit)
    assert err.__cause__ is None
    assert isinstance(err.__context__, LLMContextLengthExceededError)
    assert classify(err).matched is err.__context__


def test_cyclic_chain_terminates() -> None:
    a = RuntimeError("a")
    b = RuntimeError("b")
    a.__cause__ = b
    b.__cause__ = a

    assert list(chain(a)) == [a, b]
    found = classify(a)
    assert found.code == "INTERNAL_ERROR"
    assert found.matched is a


def test_chain_follows_cause_before_context() -> None:
    cause, context, err = ValueError("cause"), KeyError("context"), RuntimeError("outer")
    err.__cause__ = cause
    err.__context__ = context

    assert list(chain(err)) == [err, cause]


def test_chain_is_capped_at_max_chain() -> None:
    errors = [RuntimeError(str(i)) for i in range(MAX_CHAIN + 4)]
    for outer, inner in zip(errors, errors[1:], strict=False):
        outer.__cause__ = inner
    errors[-1].__cause__ = openai_status_error(openai.RateLimitError, 429, "deep", code="rate_limit_exceeded")

    assert list(chain(errors[0])) == errors[:MAX_CHAIN]
    assert classify(errors[0]).code == "INTERNAL_ERROR"  # the 429 is beyond the cap


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        pytest.param(KeyError("x"), "KeyError", id="builtin"),
        pytest.param(openai.APITimeoutError(request=openai_request()), "openai.APITimeoutError", id="openai"),
        pytest.param(sa.TimeoutError(), "sqlalchemy.exc.TimeoutError", id="sqlalchemy"),
        pytest.param(
            ContextLengthError("x"), "backend.exceptions.execution_errors.ContextLengthError", id="own"
        ),
    ],
)
def test_qualified_name(exc: BaseException, name: str) -> None:
    assert qualified_name(exc) == name


def _all_crewrun_error_classes() -> list[type[CrewrunError]]:
    found: list[type[CrewrunError]] = []
    stack: list[type[CrewrunError]] = [CrewrunError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


CREWRUN_ERROR_CLASSES = [
    cls for _, cls in inspect.getmembers(execution_errors, inspect.isclass) if issubclass(cls, CrewrunError)
]


@pytest.mark.parametrize("cls", CREWRUN_ERROR_CLASSES, ids=lambda c: c.__name__)
def test_crewrun_error_classifies_as_its_default_code(cls: type[CrewrunError]) -> None:
    err = cls("boom", service="openai")

    found = classify(err)

    assert found.code == cls.default_code
    assert found.category == REGISTRY[cls.default_code].category.value
    assert found.matched is err
    assert (found.status_code, found.provider_code, found.retry_after_s) == (None, None, None)


def test_crewrun_error_unknown_code_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        ConfigurationError("x", code="NO_SUCH_CODE")


# ---------------------------------------------------------------- code_for_http


@pytest.mark.parametrize(
    ("status", "provider_code", "message", "code"),
    [
        pytest.param(429, "insufficient_quota", "", "LLM_QUOTA_EXHAUSTED", id="pc-insufficient_quota"),
        pytest.param(400, "billing_hard_limit_reached", "", "LLM_QUOTA_EXHAUSTED", id="pc-billing-hard"),
        pytest.param(400, "credit_balance_too_low", "", "LLM_QUOTA_EXHAUSTED", id="pc-credit"),
        pytest.param(429, None, "You exceeded your current quota", "LLM_QUOTA_EXHAUSTED", id="msg-quota"),
        pytest.param(400, None, "Your credit balance is too low", "LLM_QUOTA_EXHAUSTED", id="msg-credit"),
        pytest.param(400, "string_above_max_length", "", "LLM_CONTEXT_TOO_LONG", id="pc-string-max"),
        pytest.param(400, None, "maximum context length is 4096", "LLM_CONTEXT_TOO_LONG", id="msg-ctx"),
        pytest.param(400, "content_filter", "", "LLM_CONTENT_REFUSED", id="pc-content_filter"),
        pytest.param(
            400, None, "filtered by the content management policy", "LLM_CONTENT_REFUSED", id="msg-azure"
        ),
        pytest.param(
            400,
            None,
            "Your request was rejected as a result of our safety system.",
            "LLM_CONTENT_REFUSED",
            id="msg-safety-system",
        ),
        pytest.param(None, "invalid_api_key", "", "LLM_AUTH_FAILED", id="pc-invalid_api_key"),
        pytest.param(None, "authentication_error", "", "LLM_AUTH_FAILED", id="pc-authentication_error"),
        pytest.param(None, "permission_error", "", "LLM_PERMISSION_DENIED", id="pc-permission"),
        pytest.param(None, "model_not_found", "", "CONFIG_MODEL_UNKNOWN", id="pc-model_not_found"),
        pytest.param(None, "not_found_error", "", "CONFIG_MODEL_UNKNOWN", id="pc-not_found_error"),
        pytest.param(None, "rate_limit_error", "", "LLM_RATE_LIMITED", id="pc-rate_limit_error"),
        pytest.param(None, "overloaded_error", "", "LLM_PROVIDER_OVERLOADED", id="pc-overloaded"),
        pytest.param(408, None, "", "LLM_TIMEOUT", id="408"),
        pytest.param(504, None, "", "LLM_TIMEOUT", id="504"),
        pytest.param(413, None, "", "LLM_CONTEXT_TOO_LONG", id="413"),
        pytest.param(402, None, "", "LLM_QUOTA_EXHAUSTED", id="402"),
        pytest.param(409, None, "", "LLM_PROVIDER_ERROR", id="409"),
        pytest.param(502, None, "", "LLM_PROVIDER_ERROR", id="502"),
        pytest.param(529, None, "", "LLM_PROVIDER_OVERLOADED", id="529"),
        pytest.param(418, None, "", "LLM_BAD_REQUEST", id="418"),
        pytest.param(None, None, "", "LLM_BAD_REQUEST", id="no-status"),
        pytest.param(429, "RATE_LIMIT_EXCEEDED", "", "LLM_RATE_LIMITED", id="pc-case-insensitive"),
        # Provider failure codes decide whatever the status: a stream's error event comes in a 200.
        pytest.param(500, "server_error", "", "LLM_PROVIDER_ERROR", id="pc-server_error-500"),
        pytest.param(200, "api_error", "", "LLM_PROVIDER_ERROR", id="pc-api_error-200"),
        pytest.param(200, "API_ERROR", "", "LLM_PROVIDER_ERROR", id="pc-api_error-upper-200"),
        pytest.param(None, "internal_error", "", "LLM_PROVIDER_ERROR", id="pc-internal_error-no-status"),
        pytest.param(
            200, "internal_server_error", "", "LLM_PROVIDER_ERROR", id="pc-internal_server_error-200"
        ),
        pytest.param(400, "server_error", "", "LLM_PROVIDER_ERROR", id="pc-server_error-beats-400"),
        pytest.param(413, "api_error", "", "LLM_PROVIDER_ERROR", id="pc-api_error-beats-413"),
        pytest.param(504, "api_error", "", "LLM_PROVIDER_ERROR", id="pc-api_error-beats-504"),
        pytest.param(200, "timeout_error", "", "LLM_TIMEOUT", id="pc-timeout_error-200"),
        pytest.param(None, "timeout_error", "", "LLM_TIMEOUT", id="pc-timeout_error-no-status"),
        pytest.param(500, "timeout_error", "", "LLM_TIMEOUT", id="pc-timeout_error-beats-500"),
        # ... but the codes and statuses checked before them still win.
        pytest.param(503, "server_error", "", "LLM_PROVIDER_OVERLOADED", id="503-beats-pc-server_error"),
        pytest.param(429, "api_error", "", "LLM_RATE_LIMITED", id="429-beats-pc-api_error"),
        pytest.param(401, "server_error", "", "LLM_AUTH_FAILED", id="401-beats-pc-server_error"),
        pytest.param(200, "overloaded_error", "", "LLM_PROVIDER_OVERLOADED", id="pc-overloaded-200"),
        pytest.param(
            200, "api_error", "prompt is too long: 212345 tokens", "LLM_CONTEXT_TOO_LONG", id="msg-beats-pc"
        ),
        # A 200 with no failure code is no provider failure.
        pytest.param(200, None, "", "LLM_BAD_REQUEST", id="200-no-code"),
    ],
)
def test_code_for_http(status: int | None, provider_code: str | None, message: str, code: str) -> None:
    assert code_for_http(status, provider_code, message) == code


# What decides before the provider failure codes: 401, 403, 404, 429, 503 and 529.
_STATUS_FIRST = {
    "LLM_AUTH_FAILED",
    "LLM_PERMISSION_DENIED",
    "CONFIG_MODEL_UNKNOWN",
    "LLM_RATE_LIMITED",
    "LLM_PROVIDER_OVERLOADED",
}


@pytest.mark.parametrize(
    ("provider_code", "expected"),
    [
        *[
            pytest.param(
                pc,
                _STATUS_FIRST
                | {
                    "LLM_BAD_REQUEST",  # 4xx otherwise
                    "LLM_QUOTA_EXHAUSTED",  # 402
                    "LLM_TIMEOUT",  # 408, 504
                    "LLM_CONTEXT_TOO_LONG",  # 413
                    "LLM_PROVIDER_ERROR",  # 409, 5xx otherwise
                },
                id=f"pc-{pc}",
            )
            for pc in (None, "", "unknown_code")
        ],
        *[
            pytest.param(pc, _STATUS_FIRST | {"LLM_PROVIDER_ERROR"}, id=f"pc-{pc}")
            for pc in ("server_error", "api_error", "internal_error", "internal_server_error")
        ],
        pytest.param("timeout_error", _STATUS_FIRST | {"LLM_TIMEOUT"}, id="pc-timeout_error"),
    ],
)
def test_code_for_http_over_all_error_statuses_stays_in_the_registry(
    provider_code: str | None, expected: set[str]
) -> None:
    codes = {code_for_http(status, provider_code, "") for status in range(400, 600)}

    assert codes <= set(REGISTRY)
    assert codes == expected


@pytest.mark.parametrize(
    "provider_code", ["server_error", "api_error", "internal_error", "internal_server_error"]
)
def test_provider_failure_codes_are_a_retryable_provider_error_on_every_other_status(
    provider_code: str,
) -> None:
    decided_by_status = {401, 403, 404, 429, 503, 529}
    for status in [None, 200, *range(400, 600)]:
        if status in decided_by_status:
            continue
        assert code_for_http(status, provider_code, "") == "LLM_PROVIDER_ERROR", status
    assert REGISTRY["LLM_PROVIDER_ERROR"].retryable is True


# ---------------------------------------------------------------- Retry-After

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "30"}, 30.0, id="retry-after-seconds"),
        pytest.param({"retry-after": " 2.5 "}, 2.5, id="retry-after-fraction-spaces"),
        pytest.param({"retry-after": "-4"}, 0.0, id="retry-after-negative"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="retry-after-ms"),
        pytest.param({"retry-after-ms": "-10"}, 0.0, id="retry-after-ms-negative"),
        pytest.param({"retry-after-ms": "soon"}, None, id="retry-after-ms-garbage"),
        pytest.param({"retry-after": "30", "retry-after-ms": "1500"}, 30.0, id="both-max-seconds"),
        pytest.param({"retry-after": "1", "retry-after-ms": "1500"}, 1.5, id="both-max-ms"),
        pytest.param(
            {"retry-after": format_datetime(NOW + timedelta(seconds=90), usegmt=True)}, 90.0, id="http-date"
        ),
        pytest.param({"retry-after": "Fri, 14 Mar 2025 12:01:30 -0000"}, 90.0, id="http-date-naive"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0, id="http-date-past"),
        pytest.param({"retry-after": "garbage"}, None, id="retry-after-garbage"),
        pytest.param({"x-ratelimit-reset-requests": "6m0s"}, 360.0, id="openai-reset-6m0s"),
        pytest.param({"x-ratelimit-reset-requests": "20ms"}, 0.02, id="openai-reset-20ms"),
        pytest.param({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5, id="openai-reset-1h2m3.5s"),
        pytest.param({"x-ratelimit-reset-tokens": "1s"}, 1.0, id="openai-reset-1s"),
        pytest.param({"x-ratelimit-reset-requests": "2m30"}, None, id="openai-reset-unitless-tail"),
        pytest.param({"x-ratelimit-reset-requests": "soon"}, None, id="openai-reset-garbage"),
        pytest.param(
            {"anthropic-ratelimit-requests-reset": (NOW + timedelta(seconds=45)).isoformat()},
            45.0,
            id="anthropic-requests-reset",
        ),
        pytest.param(
            {"anthropic-ratelimit-tokens-reset": "2025-03-14T12:00:45Z"}, 45.0, id="anthropic-reset-Z"
        ),
        # RFC 3339 lets the UTC designator be lower case too.
        pytest.param(
            {"anthropic-ratelimit-tokens-reset": "2025-03-14t12:00:45z"},
            45.0,
            id="anthropic-reset-lowercase-z",
        ),
        pytest.param(
            {"anthropic-ratelimit-input-tokens-reset": "2025-03-14T12:01:00"},
            60.0,
            id="anthropic-reset-naive",
        ),
        pytest.param(
            {"anthropic-ratelimit-output-tokens-reset": "2025-03-14T11:00:00Z"},
            0.0,
            id="anthropic-reset-past",
        ),
        pytest.param({"anthropic-ratelimit-requests-reset": "tomorrow"}, None, id="anthropic-reset-garbage"),
        pytest.param(
            {
                "retry-after": "5",
                "x-ratelimit-reset-tokens": "7s",
                "anthropic-ratelimit-tokens-reset": "2025-03-14T12:00:09Z",
            },
            9.0,
            id="all-kinds-longest-wins",
        ),
        pytest.param({"retry-after": 30}, None, id="non-string-value-ignored"),
        pytest.param({}, None, id="no-headers"),
        pytest.param(None, None, id="none"),
        pytest.param(httpx.Headers({"Retry-After": "8"}), 8.0, id="httpx-headers-case-insensitive"),
        pytest.param(httpx2.Headers({"Retry-After": "8"}), 8.0, id="httpx2-headers-case-insensitive"),
        # Capped at a day (MAX_RETRY_AFTER_S); a non-finite wait counts as the cap.
        pytest.param({"retry-after": "inf"}, 86_400.0, id="retry-after-inf"),
        pytest.param({"retry-after": "Infinity"}, 86_400.0, id="retry-after-Infinity"),
        pytest.param({"retry-after": "1e15"}, 86_400.0, id="retry-after-1e15"),
        pytest.param({"retry-after": "86400"}, 86_400.0, id="retry-after-a-day"),
        pytest.param({"retry-after": "86401"}, 86_400.0, id="retry-after-a-day-and-a-second"),
        pytest.param({"retry-after-ms": "inf"}, 86_400.0, id="retry-after-ms-inf"),
        pytest.param({"retry-after-ms": "1e15"}, 86_400.0, id="retry-after-ms-1e15"),
        pytest.param({"retry-after": "inf", "retry-after-ms": "1500"}, 86_400.0, id="inf-and-finite-longest"),
        pytest.param({"retry-after": "-inf", "retry-after-ms": "1500"}, 1.5, id="minus-inf-is-zero"),
        pytest.param({"x-ratelimit-reset-requests": "100000h"}, 86_400.0, id="openai-reset-100000h"),
        pytest.param({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 86_400.0, id="http-date-far-future"),
        pytest.param(
            {"anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z"},
            86_400.0,
            id="anthropic-reset-far-future",
        ),
    ],
)
def test_retry_after_from_headers(headers: Any, expected: float | None) -> None:
    assert retry_after_from_headers(headers, now=NOW) == expected


def test_retry_after_from_headers_defaults_now_to_the_clock() -> None:
    assert retry_after_from_headers({"retry-after": "5"}) == 5.0


def test_retry_after_cap_is_a_day() -> None:
    assert MAX_RETRY_AFTER_S == 86_400.0


# ---------------------------------------------------------------- mapping completeness

# Base classes matched *exactly*: the SDKs' bare base classes (the ``_exact`` rule: what they raise
# for set-up problems) and the bare APIError (``_exact_api_error``: a stream's error event). A
# subclass of them is not covered by those rules, so they do not count as coverage.
CATCH_ALL_BASES: frozenset[type[BaseException]] = frozenset(
    {openai.OpenAIError, anthropic.AnthropicError, openai.APIError, anthropic.APIError}
)

# Classes that reaching a task boundary means a bug (or a feature crewrun does not use), not a
# runtime failure of a dependency: INTERNAL_ERROR (two attempts) is right for them.
DELIBERATELY_INTERNAL: frozenset[type[BaseException]] = frozenset(
    {
        openai.InvalidWebhookSignatureError,  # webhook verification: crewrun receives no openai webhooks
        openai.WebSocketQueueFullError,  # realtime/websocket client, unused; a full send queue is caller misuse
        anthropic.APIWebhookValidationError,  # webhook verification: crewrun receives no anthropic webhooks
        httpx.HTTPError,  # abstract base: httpx raises only its subclasses
        httpx.RequestError,  # abstract base: httpx raises only its subclasses
        httpx.CookieConflict,  # ambiguous cookie lookup: a programming error
        httpx.StreamError,  # base of the stream-misuse errors below
        httpx.StreamConsumed,  # reading a streamed body twice: a programming error
        httpx.StreamClosed,  # reading a closed stream: a programming error
        httpx.ResponseNotRead,  # .content before .read(): a programming error
        httpx.RequestNotRead,  # .content before .read(): a programming error
        # httpx2, anthropic's fork of httpx: the same classes, the same reasons.
        httpx2.HTTPError,
        httpx2.RequestError,
        httpx2.CookieConflict,
        httpx2.StreamError,
        httpx2.StreamConsumed,
        httpx2.StreamClosed,
        httpx2.ResponseNotRead,
        httpx2.RequestNotRead,
    }
)

# Mapped by an explicit rule to INTERNAL_ERROR: sending a request the client itself refuses (an
# illegal header value, ...) is crewrun's bug, not the network's fault.
MAPPED_TO_INTERNAL: frozenset[type[BaseException]] = frozenset(
    {httpx.LocalProtocolError, httpx2.LocalProtocolError}
)

# Runtime failures that no rule covers today; remove an entry once a rule covers it.
KNOWN_UNMAPPED: frozenset[type[BaseException]] = frozenset()


def _exception_classes(module: Any, names: list[str]) -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in names:
        if name.startswith("_"):
            continue
        value = getattr(module, name, None)
        if inspect.isclass(value) and issubclass(value, BaseException):
            found[f"{module.__name__}.{name}"] = value
    return found


def _library_exception_classes() -> dict[str, type[BaseException]]:
    openai_names = [n for n in dir(openai) if n.endswith("Error")] + [
        n
        for n in dir(openai)
        if inspect.isclass(getattr(openai, n)) and issubclass(getattr(openai, n), openai.OpenAIError)
    ]
    return {
        **_exception_classes(openai, openai_names),
        **_exception_classes(anthropic, list(anthropic.__all__)),
        **_exception_classes(httpx, list(httpx.__all__)),
        **_exception_classes(httpx2, list(httpx2.__all__)),
    }


def _covered(cls: type[BaseException]) -> bool:
    covering = tuple(mapped_types() - CATCH_ALL_BASES)
    return cls in CATCH_ALL_BASES or issubclass(cls, covering)


LIBRARY_EXCEPTIONS = _library_exception_classes()


def test_library_exception_enumeration_is_not_empty() -> None:
    # Guards the enumeration itself: a silent empty list would make the completeness test vacuous.
    assert "openai.RateLimitError" in LIBRARY_EXCEPTIONS
    assert "openai.WebSocketQueueFullError" in LIBRARY_EXCEPTIONS
    assert "anthropic.OverloadedError" in LIBRARY_EXCEPTIONS
    assert "anthropic.CredentialsError" in LIBRARY_EXCEPTIONS
    assert "httpx.StreamConsumed" in LIBRARY_EXCEPTIONS
    assert "httpx.ReadTimeout" in LIBRARY_EXCEPTIONS
    assert "httpx2.ReadTimeout" in LIBRARY_EXCEPTIONS
    assert "httpx2.LocalProtocolError" in LIBRARY_EXCEPTIONS
    assert "httpx2.StreamConsumed" in LIBRARY_EXCEPTIONS
    httpx_names = {n.removeprefix("httpx.") for n in LIBRARY_EXCEPTIONS if n.startswith("httpx.")}
    httpx2_names = {n.removeprefix("httpx2.") for n in LIBRARY_EXCEPTIONS if n.startswith("httpx2.")}
    assert httpx_names <= httpx2_names  # the fork exports every httpx exception class
    assert len(LIBRARY_EXCEPTIONS) >= 110


def test_every_library_exception_class_is_mapped_or_deliberately_internal() -> None:
    unmapped = sorted(
        name
        for name, cls in LIBRARY_EXCEPTIONS.items()
        if not _covered(cls) and cls not in DELIBERATELY_INTERNAL and cls not in KNOWN_UNMAPPED
    )

    assert unmapped == [], "add a rule to classifier.rules() or a DELIBERATELY_INTERNAL entry"


def test_every_library_exception_class_is_a_subclass_of_a_mapped_type_or_listed() -> None:
    mapped = tuple(mapped_types())
    loose = sorted(
        name
        for name, cls in LIBRARY_EXCEPTIONS.items()
        if not issubclass(cls, mapped) and cls not in DELIBERATELY_INTERNAL and cls not in KNOWN_UNMAPPED
    )

    assert loose == []


def test_deliberately_internal_entries_are_not_mapped_and_classify_as_internal() -> None:
    # A stale entry would hide a real mapping decision; each one really ends as INTERNAL_ERROR.
    for cls in DELIBERATELY_INTERNAL | KNOWN_UNMAPPED:
        assert not _covered(cls), cls
        assert cls in LIBRARY_EXCEPTIONS.values(), cls
    assert DELIBERATELY_INTERNAL.isdisjoint(KNOWN_UNMAPPED | MAPPED_TO_INTERNAL | CATCH_ALL_BASES)


def test_local_protocol_errors_are_internal_through_an_explicit_rule() -> None:
    # Not a DELIBERATELY_INTERNAL entry any more: a rule names them, ahead of the connection rules.
    for cls in MAPPED_TO_INTERNAL:
        assert cls in mapped_types(), cls
        assert cls in LIBRARY_EXCEPTIONS.values(), cls
        found = classify(cls("Illegal header value"))
        assert (found.code, found.category) == ("INTERNAL_ERROR", "internal")
    # Their parents are still network failures (httpx's; httpx2's are a reported bug).
    assert classify(httpx.ProtocolError("x")).code == "NETWORK_CONNECT_FAILED"
    assert classify(httpx.RemoteProtocolError("x")).code == "NETWORK_CONNECTION_RESET"


def test_catch_all_bases_match_only_themselves() -> None:
    assert classify(openai.OpenAIError("x")).code == "CONFIG_INVALID"
    assert classify(anthropic.AnthropicError("x")).code == "CONFIG_INVALID"
    assert classify(openai.APIError("x", openai_request(), body=None)).code == "LLM_PROVIDER_ERROR"
    assert classify(anthropic.APIError("x", anthropic_request(), body=None)).code == "LLM_PROVIDER_ERROR"

    class FutureOpenAIError(openai.APIError):
        """A subclass no rule names: neither the bare-APIError rule nor the OpenAIError one takes it."""

    class FutureAnthropicError(anthropic.APIError):
        """Same for anthropic."""

    assert classify(FutureOpenAIError("x", openai_request(), body=None)).code == "INTERNAL_ERROR"
    assert classify(FutureAnthropicError("x", anthropic_request(), body=None)).code == "INTERNAL_ERROR"
    assert classify(openai.WebSocketQueueFullError("x")).code == "INTERNAL_ERROR"
    assert classify(anthropic.APIWebhookValidationError("x", anthropic_request(), body=None)).code == (
        "INTERNAL_ERROR"
    )


def test_mapped_types_are_exception_classes_and_rules_are_cached() -> None:
    assert rules() is rules()
    assert all(inspect.isclass(t) and issubclass(t, BaseException) for t in mapped_types())
    assert {openai.APIStatusError, anthropic.APIStatusError, httpx.HTTPStatusError, CrewrunError} <= (
        mapped_types()
    )
    assert {httpx2.HTTPStatusError, httpx2.TimeoutException, httpx2.LocalProtocolError} <= mapped_types()
    assert mapped_types() >= CATCH_ALL_BASES


def test_every_crewrun_error_default_code_is_registered() -> None:
    classes = _all_crewrun_error_classes()

    assert set(CREWRUN_ERROR_CLASSES) <= set(classes)
    assert len(CREWRUN_ERROR_CLASSES) == 5  # the tree in execution_errors.py
    assert [c.__name__ for c in classes if c.default_code not in REGISTRY] == []


def test_crewrun_error_exposes_its_registry_entry() -> None:
    err = ConfigurationError("no key", code="CONFIG_SECRET_MISSING", service="openai")

    assert err.entry is REGISTRY["CONFIG_SECRET_MISSING"]
    assert (err.code, err.category, err.service, err.retry_after_s) == (
        "CONFIG_SECRET_MISSING",
        "configuration",
        "openai",
        None,
    )
    assert err.entry.as_dict() == {
        "code": "CONFIG_SECRET_MISSING",
        "category": "configuration",
        "severity": "high",
        "retryable": False,
        "http_status": 500,
        "description": "The environment variable named by api_key_env is not set on the worker.",
        "final": False,
        "remedy": "Set it in the worker's environment, then resume the execution.",
    }


def test_registry_has_no_duplicate_codes() -> None:
    assert len(_REGISTRY) == len(REGISTRY)
    assert [e.code for e in _REGISTRY] == list(REGISTRY)


def test_every_rule_returns_registered_codes_for_the_corpus() -> None:
    codes = {classify(param.values[0]()).code for param in CORPUS}

    assert codes <= set(REGISTRY)


def test_classifier_module_docstring_names_this_test_file() -> None:
    assert "tests/test_classifier.py" in (classifier.__doc__ or "")


# ---------------------------------------------------------------- stream error events and httpx2


def test_openai_stream_error_event_is_a_retryable_provider_error() -> None:
    err = openai_stream_error()

    found = classify(err)

    assert (found.code, found.category) == ("LLM_PROVIDER_ERROR", "external_service")
    assert found.entry.retryable is True
    assert found.matched is err
    assert (found.status_code, found.provider_code, found.retry_after_s) == (None, None, None)


def test_anthropic_stream_api_error_on_200_is_a_retryable_provider_error() -> None:
    err = anthropic_status_error(anthropic.APIStatusError, 200, "api_error", "Internal server error")

    found = classify(err)

    assert (found.code, found.category) == ("LLM_PROVIDER_ERROR", "external_service")
    assert found.entry.retryable is True
    assert found.matched is err
    assert (found.status_code, found.provider_code, found.retry_after_s) == (200, "api_error", None)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param("TimeoutException", "LLM_TIMEOUT", id="TimeoutException"),
        pytest.param("ConnectTimeout", "LLM_TIMEOUT", id="ConnectTimeout"),
        pytest.param("ReadTimeout", "LLM_TIMEOUT", id="ReadTimeout"),
        pytest.param("WriteTimeout", "LLM_TIMEOUT", id="WriteTimeout"),
        pytest.param("PoolTimeout", "LLM_TIMEOUT", id="PoolTimeout"),
        pytest.param("LocalProtocolError", "INTERNAL_ERROR", id="LocalProtocolError"),
    ],
)
def test_httpx2_errors_are_classified_like_httpx_ones(name: str, code: str) -> None:
    fork, original = getattr(httpx2, name)("x"), getattr(httpx, name)("x")

    assert classify(fork).code == classify(original).code == code
    assert classify(fork).matched is fork


def test_httpx2_status_error_is_classified_like_httpx_one() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    fork = classify(httpx2_status_error(529, json_body=body, **{"retry-after": "4"}))
    original = classify(http_status_error(529, json_body=body, **{"retry-after": "4"}))

    expected = ("LLM_PROVIDER_OVERLOADED", 529, "overloaded_error", 4.0)
    assert (fork.code, fork.status_code, fork.provider_code, fork.retry_after_s) == expected
    assert (original.code, original.status_code, original.provider_code, original.retry_after_s) == expected


# ---------------------------------------------------------------- production bugs (reported)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param("RemoteProtocolError", "NETWORK_CONNECTION_RESET", id="RemoteProtocolError"),
        pytest.param("ReadError", "NETWORK_CONNECTION_RESET", id="ReadError"),
        pytest.param("WriteError", "NETWORK_CONNECTION_RESET", id="WriteError"),
        pytest.param("CloseError", "NETWORK_CONNECTION_RESET", id="CloseError"),
        pytest.param("ConnectError", "NETWORK_CONNECT_FAILED", id="ConnectError"),
        pytest.param("ProxyError", "NETWORK_CONNECT_FAILED", id="ProxyError"),
        pytest.param("NetworkError", "NETWORK_CONNECT_FAILED", id="NetworkError"),
        pytest.param("ProtocolError", "NETWORK_CONNECT_FAILED", id="ProtocolError"),
        pytest.param("TransportError", "NETWORK_CONNECT_FAILED", id="TransportError"),
        pytest.param("DecodingError", "LLM_OUTPUT_INVALID", id="DecodingError"),
        pytest.param("UnsupportedProtocol", "CONFIG_INVALID", id="UnsupportedProtocol"),
        pytest.param("InvalidURL", "CONFIG_INVALID", id="InvalidURL"),
        pytest.param("TooManyRedirects", "CONFIG_INVALID", id="TooManyRedirects"),
    ],
)
def test_httpx2_transport_errors_classify_like_their_httpx_twins(name: str, code: str) -> None:
    assert classify(getattr(httpx, name)("x")).code == code  # the httpx twin, as the corpus has it
    assert classify(getattr(httpx2, name)("x")).code == code


def test_completeness_guard_detects_a_new_unmapped_class() -> None:
    class BrandNewSDKError(openai.OpenAIError):
        """What a future openai release might export."""

    fake_module = SimpleNamespace(
        __name__="openai", BrandNewSDKError=BrandNewSDKError, RateLimitError=openai.RateLimitError
    )

    found = _exception_classes(fake_module, ["BrandNewSDKError", "RateLimitError", "_Private"])

    assert list(found) == ["openai.BrandNewSDKError", "openai.RateLimitError"]
    assert not _covered(found["openai.BrandNewSDKError"])
    assert _covered(found["openai.RateLimitError"])


def test_stream_error_event_keeps_the_code_its_body_names() -> None:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    limited = openai.APIError(
        "rate limited mid-stream", request=request, body={"code": "rate_limit_exceeded"}
    )
    too_long = openai.APIError("x", request=request, body={"code": "context_length_exceeded"})
    assert classify(limited).code == "LLM_RATE_LIMITED"
    assert classify(too_long).code == "LLM_CONTEXT_TOO_LONG"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
        ({"retry-after": "-5"}, 0.0),
    ],
)
def test_retry_after_ignores_nan_and_clamps_negative(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_from_headers(headers) == expected


def test_crewrun_error_retry_after_is_capped_like_a_header() -> None:
    assert (
        classify(CrewrunError("x", code="LLM_RATE_LIMITED", retry_after_s=float("inf"))).retry_after_s
        == 86_400.0
    )
    assert (
        classify(CrewrunError("x", code="LLM_RATE_LIMITED", retry_after_s=float("nan"))).retry_after_s is None
    )


@pytest.mark.parametrize(
    ("message", "code"),
    [
        pytest.param("database is locked", "DB_LOCKED", id="sqlite-locked"),
        pytest.param("deadlock detected", "DB_LOCKED", id="postgresql-deadlock"),
        pytest.param(
            "could not serialize access due to concurrent update", "DB_LOCKED", id="postgresql-serialization"
        ),
        pytest.param("canceling statement due to lock timeout", "DB_LOCKED", id="postgresql-lock-timeout"),
        pytest.param(
            "could not write block 7 of temporary file: disk full", "RESOURCE_DISK_FULL", id="disk-full"
        ),
        pytest.param("connection refused", "DB_UNAVAILABLE", id="unavailable"),
    ],
)
def test_a_database_drivers_error_is_read_from_its_message(message: str, code: str) -> None:
    assert classify(sa.OperationalError("UPDATE executions", {}, Exception(message))).code == code


def test_a_stream_error_event_without_a_code_is_read_from_its_message() -> None:
    event = openai.APIError(
        "You exceeded your current quota, please check your plan", openai_request(), body=None
    )

    assert classify(event).code == "LLM_QUOTA_EXHAUSTED"


def test_an_error_event_of_a_stream_that_cannot_be_read_again_is_decided_by_its_body() -> None:
    # Anthropic reports trouble mid-stream as an error event of a 200 response: the body the SDK
    # parsed names it; the response's own text is a stream already consumed.
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    streamed = httpx2.Response(200, request=anthropic_request(), stream=httpx2.ByteStream(b"event: error"))
    err = anthropic.APIStatusError("Overloaded", response=streamed, body=body)

    found = classify(err)

    assert (found.code, found.status_code, found.provider_code) == (
        "LLM_PROVIDER_OVERLOADED",
        200,
        "overloaded_error",
    )


class VendorAPIError(Exception):
    """Another SDK's error: its status and its code as attributes, a response whose body is no JSON
    (a proxy's HTML page)."""

    def __init__(self, message: str, *, status_code: Any, code: Any, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.response = SimpleNamespace(headers=headers, text="<html>Too Many Requests</html>")


def test_a_foreign_sdks_error_keeps_the_status_code_and_retry_after_it_carries() -> None:
    err = VendorAPIError(
        "slow down", status_code=429, code="rate_limit_exceeded", headers={"retry-after": "2"}
    )

    found = classify(err)

    # No rule knows the class: internal, but its record says what the service answered.
    assert (found.code, found.status_code, found.provider_code, found.retry_after_s) == (
        "INTERNAL_ERROR",
        429,
        "rate_limit_exceeded",
        2.0,
    )


@pytest.mark.parametrize(
    ("status_code", "code"),
    [
        pytest.param("429", "rate_limit_exceeded", id="status-as-text"),
        pytest.param(None, 7, id="grpc-numeric-code"),
    ],
)
def test_only_a_number_is_an_http_status_and_only_text_a_provider_code(status_code: Any, code: Any) -> None:
    found = classify(VendorAPIError("denied", status_code=status_code, code=code, headers={}))

    assert found.status_code is None
    assert found.provider_code == (code if isinstance(code, str) else None)


def test_an_sdk_never_imported_has_no_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "httpx2")

    assert not [t for t in mapped_types() if t.__module__.startswith("httpx2")]
    assert classify(httpx.ConnectError("refused")).code == "NETWORK_CONNECT_FAILED"


def test_an_sdk_a_loader_ran_itself_counts_as_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lazy loaders and plugin systems run a module themselves (module_from_spec, exec_module): its
    # spec never says whether an import is in progress.
    ran = types.ModuleType("httpx2")
    ran.__dict__.update({k: v for k, v in vars(httpx2).items() if not k.startswith("__")})
    ran.__spec__ = importlib.machinery.ModuleSpec("httpx2", loader=None)
    monkeypatch.setitem(sys.modules, "httpx2", ran)

    assert httpx2.TimeoutException in mapped_types()
    assert classify(httpx2.ReadTimeout("slow")).code == "LLM_TIMEOUT"


def test_an_sdk_another_thread_is_still_importing_has_no_rules_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.modules holds a module from the start of its import: its classes are not defined yet.
    half_built = types.ModuleType("httpx2")
    half_built.__spec__ = importlib.machinery.ModuleSpec("httpx2", loader=None)
    half_built.__spec__._initializing = True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "httpx2", half_built)

    assert not [t for t in mapped_types() if t.__module__.startswith("httpx2")]
    assert classify(httpx.ReadTimeout("slow")).code == "LLM_TIMEOUT"


def test_an_sdk_loaded_after_the_table_was_built_gets_its_rules() -> None:
    # A worker builds the table at start without anthropic (importing it costs 1.5 s of CPU);
    # CrewAI imports it when a crew first uses an Anthropic model, and its errors classify then.
    script = (
        "import sys\n"
        "from backend.exceptions.classifier import classify, rules\n"
        "rules()\n"
        "before = 'anthropic' in sys.modules\n"
        "import anthropic, httpx\n"
        "request = httpx.Request('POST', 'https://api.anthropic.com/v1/messages')\n"
        "response = httpx.Response(429, json={'type': 'error', 'error': {'type': 'rate_limit_error'}},"
        " headers={'retry-after': '7'}, request=request)\n"
        "found = classify(anthropic.RateLimitError('slow down', response=response, body=None))\n"
        "print(before, found.entry.code, found.retry_after_s)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.split() == ["False", "LLM_RATE_LIMITED", "7.0"], out.stderr
