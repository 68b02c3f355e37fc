"""Secret redaction and size bounds for everything that leaves a process: error messages, stacks,
structured details, log lines, API responses and the ApplicationError that enters Temporal history.

What counts as a secret: provider key shapes (``sk-...``, ``sk-ant-...``), bearer tokens, ``key=`` /
``token=`` style query parameters and JSON/header fields, passwords in URLs, and the literal values
of environment variables named like ``*_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD`` (a provider
echoing a key back in an error body is the usual leak).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MARK = "[REDACTED]"
MAX_MESSAGE_CHARS = 2000
MAX_STACK_CHARS = 8000
_MIN_SECRET_LEN = 8  # shorter env values ("1", "true") would shred ordinary text

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # URL credentials: scheme://user:password@host
    # (the scheme starts where no scheme character precedes it: linear on long runs)
    (
        re.compile(r"(?P<pre>(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*+://[^/\s:@]*+:)[^@\s/]++(?=@)", re.I),
        r"\g<pre>" + MARK,
    ),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?P<pre>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{6,}", re.I), r"\g<pre>" + MARK),
    # Other schemes only after "Authorization": "token" alone is an ordinary word in LLM errors.
    (
        re.compile(r"(?P<pre>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:token|digest)\s+)[^\s\"',;}]{6,}", re.I),
        r"\g<pre>" + MARK,
    ),
    # key=value in query strings, headers, JSON and Python reprs
    (
        re.compile(
            # Any word_ / word- prefix too: aws_secret_access_key=, OPENAI_API_KEY=, private-key:
            # (lookbehind + possessive prefix: linear time on long "a-a-a-..." runs, no backtracking)
            r"(?P<pre>[\"']?(?<![a-z0-9_-])(?:[a-z0-9]+[_-])*+(?:api[_-]?key|key|access[_-]?token|refresh[_-]?token|"
            r"token|secret|client[_-]?secret|secret[_-]?access[_-]?key|password|passwd|pwd|authorization|"
            r"sig|signature)[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])(?!(?:bearer|basic|token|digest)\s)[^\s\"'&,;}\]]{4,}",
            re.I,
        ),
        r"\g<pre>" + MARK,
    ),
    # provider key shapes anywhere (OpenAI sk-, sk-proj-, Anthropic sk-ant-, generic tokens)
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), MARK),
    (re.compile(r"\b(?:ghp|gho|xox[abp]|AKIA)[A-Za-z0-9_\-]{12,}"), MARK),
)

_SECRET_ENV_NAME = re.compile(r"(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.I)
_env_secrets: tuple[str, ...] = ()


def set_env_secrets(environ: dict[str, str]) -> None:
    """Remember the values of secret-named environment variables (settings calls this once)."""
    global _env_secrets
    values = {v for k, v in environ.items() if _SECRET_ENV_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    _env_secrets = tuple(sorted(values, key=len, reverse=True))  # longest first: no partial leftovers


def add_secrets(values: Iterable[str]) -> None:
    """Also redact these literal values (a key read for a task, from wherever it came)."""
    global _env_secrets
    merged = set(_env_secrets) | {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
    _env_secrets = tuple(sorted(merged, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _env_secrets:
        if secret in text:
            text = text.replace(secret, MARK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def bound(text: str, limit: int, *, keep: str = "head") -> str:
    """At most ``limit`` characters, saying how many were cut. Stacks keep their tail (the raise)."""
    if len(text) <= limit:
        return text
    room = limit
    for _ in range(3):  # the note's own length depends on the number it reports
        note = f"... [{len(text) - room} chars cut] ..."
        room = max(0, limit - len(note))
    if room == 0:
        return text[:limit] if keep == "head" else text[len(text) - limit :]
    note = f"... [{len(text) - room} chars cut] ..."
    return note + text[len(text) - room :] if keep == "tail" else text[:room] + note


def redact_message(text: str) -> str:
    return bound(redact(text), MAX_MESSAGE_CHARS)


def redact_stack(text: str) -> str:
    return bound(redact(text), MAX_STACK_CHARS, keep="tail")


def redact_data(value: Any, *, limit: int = MAX_MESSAGE_CHARS) -> Any:
    """Redact every string inside JSON-like data (dict keys included), bounding long strings."""
    if isinstance(value, str):
        return bound(redact(value), limit)
    if isinstance(value, dict):
        return {redact_data(k, limit=200): redact_data(v, limit=limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, limit=limit) for v in value]
    return value
