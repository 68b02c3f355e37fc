"""Secret redaction for anything that leaves a process: messages, stacks, logs, history.

The foundation covers provider key shapes and bearer tokens; the classification work extends it
(query-string keys, URL passwords, values of *_KEY/*_TOKEN/*_SECRET env vars).
"""

from __future__ import annotations

import re

_SECRETS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9._\-]{6,})")


def redact(text: str) -> str:
    return _SECRETS.sub("[REDACTED]", text)
