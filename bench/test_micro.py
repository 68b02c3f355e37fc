"""Section 6, micro-benchmarks (pytest-benchmark): classification of one exception, and redaction
of one KB of text. Run by bench/run.py as
``python -m pytest bench/test_micro.py --benchmark-json=…``; `make test` never collects it
(testpaths = tests)."""

from __future__ import annotations

from typing import Any

import pytest

from backend.exceptions.classifier import classify, rules
from backend.exceptions.redaction import redact, redact_stack
from bench.samples import exceptions

EXCEPTIONS = exceptions()
rules()  # built once per process in production (ErrorBoundary's constructor does it)

# One KB of what redaction really sees: a provider error body echoing a key, a URL with a
# password, a bearer header, key=value pairs, and ordinary prose around them.
_KB_PARTS = [
    "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided: ",
    "sk-proj-Abcdefghijklmnop1234567890. You can find your API key at https://platform.openai.com/account/api-keys.'",
    ", 'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}} while calling ",
    "https://user:hunter2secret@gateway.internal/v1/chat/completions?api_key=abcdef123456&model=gpt-4o ",
    "with headers {'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.payload.signature'} ",
    "The agent researcher was working on the task 'Research the otters of the northern coast' ",
    "and had produced a partial answer about their diet, habitat and social behaviour. ",
]
KB_TEXT = ("".join(_KB_PARTS) * 2)[:1024]
STACK_8KB = (
    '  File "/srv/app/.venv/lib/python3.11/site-packages/openai/_base_client.py", line 1047, in request\n'
    "    raise self._make_status_error_from_response(err.response) from None\n" * 60
)[:8192]


@pytest.mark.parametrize("kind", list(EXCEPTIONS))
def test_classify(benchmark: Any, kind: str) -> None:
    exc = EXCEPTIONS[kind]
    result = benchmark(classify, exc)
    assert result.code


def test_redact_1kb_message(benchmark: Any) -> None:
    assert len(KB_TEXT) == 1024
    out = benchmark(redact, KB_TEXT)
    assert "sk-proj-Abcdef" not in out and "hunter2" not in out


def test_redact_8kb_stack(benchmark: Any) -> None:
    benchmark.extra_info["kb"] = len(STACK_8KB) / 1024
    benchmark(redact_stack, STACK_8KB)
