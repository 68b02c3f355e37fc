"""A tool's failures go through the classifier's table like an LLM's, and get the codes of a
tool (``TOOL_RATE_LIMITED`` where an LLM's would be ``LLM_RATE_LIMITED``): whatever HTTP client
the tool uses (httpx, requests, urllib), its status, provider code and Retry-After are read."""

from __future__ import annotations

import email.message
import io
import urllib.error
from typing import Any

import httpx
import pytest
import requests

from backend.exceptions.classifier import TOOL_CODES, classify
from backend.exceptions.codes import REGISTRY
from backend.exceptions.execution_errors import CircuitOpenError, LLMOutputError

URL = "http://search.internal/tools/web_search"


def httpx_status(status: int, **headers: str) -> BaseException:
    response = httpx.Response(status, request=httpx.Request("POST", URL), headers=headers, json={})
    return httpx.HTTPStatusError(f"{status}", request=response.request, response=response)


def requests_status(status: int, **headers: str) -> BaseException:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return requests.HTTPError(f"{status} Client Error", response=response)


def urllib_status(status: int, **headers: str) -> BaseException:
    message = email.message.Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return urllib.error.HTTPError(URL, status, "error", message, io.BytesIO(b""))


@pytest.mark.parametrize(
    "build", [httpx_status, requests_status, urllib_status], ids=["httpx", "requests", "urllib"]
)
@pytest.mark.parametrize(
    ("status", "code", "category"),
    [
        (429, "TOOL_RATE_LIMITED", "rate_limit"),
        (503, "TOOL_SERVICE_ERROR", "external_service"),
        (500, "TOOL_SERVICE_ERROR", "external_service"),
        (401, "TOOL_AUTH_FAILED", "authentication"),
        (403, "TOOL_AUTH_FAILED", "authentication"),
        (402, "TOOL_QUOTA_EXHAUSTED", "quota_exhausted"),
        (400, "TOOL_ARGUMENTS_INVALID", "validation"),
        (404, "TOOL_NOT_FOUND", "validation"),
        (504, "TOOL_TIMEOUT", "timeout"),
    ],
)
def test_a_tool_services_status_decides_its_code_whatever_the_client(
    build: Any, status: int, code: str, category: str
) -> None:
    found = classify(build(status), tool=True)

    # urllib's status is its ``code`` attribute: a number, never taken for a provider's code.
    assert (found.code, found.category, found.status_code, found.provider_code) == (
        code,
        category,
        status,
        None,
    )


@pytest.mark.parametrize(
    "build", [httpx_status, requests_status, urllib_status], ids=["httpx", "requests", "urllib"]
)
def test_a_tool_services_retry_after_is_read_whatever_the_client(build: Any) -> None:
    found = classify(build(429, **{"Retry-After": "3"}), tool=True)

    assert found.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (requests.ConnectTimeout("connect timed out"), "TOOL_TIMEOUT"),
        (requests.ReadTimeout("read timed out"), "TOOL_TIMEOUT"),
        (requests.ConnectionError("refused"), "NETWORK_CONNECT_FAILED"),
        (urllib.error.URLError("unreachable"), "NETWORK_CONNECT_FAILED"),
        (httpx.ConnectError("refused"), "NETWORK_CONNECT_FAILED"),
        (requests.JSONDecodeError("Expecting value", "<html>", 0), "TOOL_RESPONSE_INVALID"),
        (KeyError("missing"), "TOOL_FAILED"),
    ],
)
def test_transport_and_unknown_failures_of_a_tool(exc: BaseException, code: str) -> None:
    assert classify(exc, tool=True).code == code


def test_an_llm_call_keeps_the_llm_codes() -> None:
    assert classify(httpx_status(429)).code == "LLM_RATE_LIMITED"
    assert classify(KeyError("missing")).code == "INTERNAL_ERROR"


def test_crewruns_own_errors_keep_their_code_in_a_tool_call() -> None:
    refused = CircuitOpenError("circuit of search-api is open", retry_after_s=4.0)

    found = classify(refused, tool=True)

    assert (found.code, found.retry_after_s) == ("CIRCUIT_OPEN", 4.0)


def test_crewruns_own_error_raised_inside_a_tool_is_not_renamed_as_the_tools() -> None:
    # A tool that asks an LLM through crewrun's boundary and gets no answer: the LLM's failure.
    empty = LLMOutputError("the LLM returned an empty answer")

    assert classify(empty, tool=True).code == "LLM_OUTPUT_INVALID"


def test_a_urllib_errors_reason_is_read_like_a_message() -> None:
    quota = urllib.error.HTTPError(URL, 429, "You exceeded your current quota", email.message.Message(), None)

    assert classify(quota, tool=True).code == "TOOL_QUOTA_EXHAUSTED"


def test_every_tool_code_is_registered_in_the_same_category_as_the_code_it_replaces() -> None:
    for llm_code, tool_code in TOOL_CODES.items():
        assert tool_code in REGISTRY, tool_code
        same_category = REGISTRY[llm_code].category == REGISTRY[tool_code].category
        # Two deliberate differences: what an LLM provider's 404/413 means is a configuration or a
        # prompt problem, a tool service's is what the agent asked for.
        assert same_category or llm_code in ("CONFIG_MODEL_UNKNOWN", "LLM_CONTEXT_TOO_LONG"), llm_code
