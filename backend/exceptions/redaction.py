"""Secret redaction and size bounds for everything that leaves a process: error messages, stacks,
structured details, log lines, API responses and the ApplicationError that enters Temporal history.

What counts as a secret: provider key shapes (``sk-...``, ``sk-ant-...``), bearer tokens, ``key=`` /
``token=`` style query parameters and JSON/header fields, passwords in URLs, and the literal values
of environment variables named like ``*_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD`` (a provider
echoing a key back in an error body is the usual leak).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MARK = "[REDACTED]"
MAX_MESSAGE_CHARS = 2000
MAX_STACK_CHARS = 8000
_MIN_SECRET_LEN = 8  # shorter env values ("1", "true") would shred ordinary text


# Case-insensitive shapes are matched case-sensitively against the text folded to lower case
# (see _fold): the same matches as re.IGNORECASE, about 8x faster in CPython's `re`. Every rule
# names the part to replace as its group "secret" and lists literals (``needs``), one of which
# every match contains, so a plain substring search skips the rule on text it cannot match.
@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    needs: tuple[str, ...]
    folded: bool = True  # matched against _fold(text); needs are lower case


_KEY_WORDS = (
    r"(?:api[_-]?key|key|access[_-]?token|refresh[_-]?token|token|secret|client[_-]?secret|"
    r"secret[_-]?access[_-]?key|password|passwd|pwd|authorization|sig|signature)"
)

_RULES: tuple[_Rule, ...] = (
    # A pattern that starts with a literal lets `re` jump from one occurrence of it to the next; a
    # word boundary before it is therefore checked by a look-behind after it: b(?<=\bb) is \bb.
    #
    # URL credentials: scheme://user:password@host (whatever the scheme)
    _Rule(re.compile(r"://[^/\s:@]*+:(?P<secret>[^@\s/]++)(?=@)"), ("://",)),
    # Authorization: Bearer xyz / Basic xyz
    _Rule(re.compile(r"b(?<=\bb)(?:earer|asic)\s+(?P<secret>[a-z0-9._~+/=\-]{6,})"), ("bearer", "basic")),
    # Other schemes only after "Authorization": "token" alone is an ordinary word in LLM errors.
    _Rule(
        re.compile(
            r"a(?<=\ba)uthorization[\"']?\s*+[:=]\s*+[\"']?(?:token|digest)\s+(?P<secret>[^\s\"',;}]{6,})"
        ),
        ("authorization",),
    ),
    # key=value in query strings, headers, JSON, Python reprs and command lines. The key word may
    # end a longer name (OPENAI_API_KEY=, aws_secret_access_key=, --api-key=, x-api-key:) but not
    # a longer word (monkey=).
    _Rule(
        re.compile(
            r"(?<![a-z0-9])" + _KEY_WORDS + r"[\"']?\s*+[:=]\s*+[\"']?(?!\[redacted\])"
            r"(?!(?:bearer|basic|token|digest)\s)(?P<secret>[^\s\"'&,;}\]]{4,})"
        ),
        ("key", "token", "secret", "passw", "pwd", "authorization", "sig"),
    ),
    # provider key shapes anywhere (OpenAI sk-, sk-proj-, Anthropic sk-ant-, generic tokens)
    _Rule(re.compile(r"(?P<secret>s(?<=\bs)k-[A-Za-z0-9_\-]{8,})"), ("sk-",), folded=False),
    _Rule(
        re.compile(r"(?P<secret>(?:g(?<=\bg)h[po]|x(?<=\bx)ox[abp]|A(?<=\bA)KIA)[A-Za-z0-9_\-]{12,})"),
        ("gh", "xox", "AKIA"),
        folded=False,
    ),
)

# re.IGNORECASE matches an ASCII letter with its other case and, besides, with four more
# (Python's re documentation): KELVIN SIGN, which lower() maps to k, and these three, which it
# does not (and U+0130 it would turn into two characters). Mapped first, _fold(text) is as long
# as text, so spans found in the folded text are spans of the original.
_FOLD_SPECIAL = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"))


def _fold(text: str) -> str:
    if not text.isascii():
        for special, plain in _FOLD_SPECIAL:
            text = text.replace(special, plain)
    return text.lower()


def _mark(text: str, matches: Iterator[re.Match[str]]) -> str:
    parts: list[str] = []
    last = 0
    for match in matches:
        start, end = match.span("secret")
        parts += (text[last:start], MARK)
        last = end
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


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
    folded = ""
    for rule in _RULES:
        if rule.folded:
            folded = folded or _fold(text)
            haystack = folded
        else:
            haystack = text
        if any(need in haystack for need in rule.needs):
            marked = _mark(text, rule.pattern.finditer(haystack))
            if marked is not text:
                text, folded = marked, ""
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
