"""The call journal of one task attempt: every LLM and tool call recorded (committed before its
answer is used), and, on a retried attempt, served from the calls an earlier attempt already paid
for while the requests match.

An agent's task is a loop of calls; when call 7 of 8 fails, Temporal retries the whole task and the
agent starts over. The journal makes calls 1 to 6 free the second time: each new request's
fingerprint (:mod:`activities.fingerprints`) is compared with the tape's next one; equal, the
recorded answer is returned without any request (no provider or tool call, no breaker permit, no
rate-limit quota); different, replay ends and every later call goes live. Calls that run in
parallel (CrewAI runs several native tool calls at once) may come in another order than recorded:
a request matches any of the next few unconsumed calls of the tape.

Answers are stored as JSON, redacted and bounded (per call and per execution); one over the bound
is kept by its hash only and is not replayable. A failed call is recorded as a failure and never
replayed. A tool whose answers go stale or whose side effects must happen again says
``replay: false``; a crew can say the same for all its calls.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from backend.db import journal
from backend.db.database import Database
from backend.db.journal import Tape, TapeEntry
from backend.db.models import JournalEntry
from backend.exceptions.redaction import redact
from backend.pricing import PriceTable, Usage

# Parallel calls are recorded in the order they finished: a request may match this many of the
# tape's next unconsumed calls (CrewAI runs at most 8 tool calls at once).
MATCH_WINDOW = 8


class NotReplayable(Exception):
    """An answer the journal cannot store faithfully (its type has no JSON form)."""


@dataclass(frozen=True)
class JournalLimits:
    max_call_bytes: int = 256_000
    max_execution_bytes: int = 16_000_000


@dataclass
class CallStats:
    """What an attempt's calls used, for the metrics: by model, and what was replayed by kind."""

    tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, "in"|"out") -> n
    cost: dict[str, float] = field(default_factory=dict)  # model -> USD
    replayed: dict[str, int] = field(default_factory=dict)  # kind -> calls


@dataclass
class AttemptJournal:
    db: Database
    execution_id: str
    task: str
    revision: int
    attempt: int
    tape: Tape
    replay: bool = True
    prices: PriceTable = field(default_factory=PriceTable)
    limits: JournalLimits = field(default_factory=JournalLimits)
    stats: CallStats = field(default_factory=CallStats)
    clock: Callable[[], float] = time.monotonic
    _seq: int = 0
    _cursor: int = 0
    _consumed: set[int] = field(default_factory=set)
    _ended: bool = False  # a request did not match: every later call goes live
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._bytes = self.tape.execution_bytes

    # ----- replay

    def served(self, kind: str, fingerprint: str, *, replayable: bool = True) -> TapeEntry | None:
        """The recorded call this request may be served from, or None (go live). A call that may
        not be served (``replayable`` false) still takes its place on the tape."""
        with self._lock:
            if self._ended:
                return None
            entries = self.tape.entries
            for index in range(self._cursor, min(len(entries), self._cursor + MATCH_WINDOW)):
                entry = entries[index]
                if index in self._consumed or entry.kind != kind or entry.fingerprint != fingerprint:
                    continue
                self._consumed.add(index)
                while self._cursor in self._consumed:
                    self._cursor += 1
                if not (self.replay and replayable):
                    return None
                self.stats.replayed[kind] = self.stats.replayed.get(kind, 0) + 1
                return entry
            self._ended = True  # the first difference: from here on everything is live
            return None

    # ----- recording: one transaction per call, before its answer is used

    def record_live(
        self,
        kind: str,
        name: str,
        service: str,
        fingerprint: str,
        answer: str | None,
        started: float,
        *,
        usage: Usage | None = None,
        provider: str | None = None,
    ) -> None:
        """``answer`` is the encoded answer, None when it has no JSON form (not replayable)."""
        usage = usage or Usage()
        cost = self.prices.cost(name, usage, provider) if kind == "llm" else None
        stored, digest, size = self._bounded(answer)
        entry = self._entry(kind, name, service, fingerprint, "ok", started)
        entry.response, entry.response_hash, entry.response_bytes = stored, digest, size
        entry.replayable = stored is not None
        entry.tokens_in, entry.tokens_out, entry.cost_usd = usage.input_tokens, usage.output_tokens, cost
        self._write(entry)
        if kind == "llm":
            with self._lock:
                for direction, n in (("in", usage.input_tokens), ("out", usage.output_tokens)):
                    self.stats.tokens[(name, direction)] = self.stats.tokens.get((name, direction), 0) + n
                if cost:
                    self.stats.cost[name] = self.stats.cost.get(name, 0.0) + cost

    def record_replayed(self, kind: str, name: str, service: str, served: TapeEntry, started: float) -> None:
        entry = self._entry(kind, name, service, served.fingerprint, "replayed", started)
        entry.source_id, entry.source_attempt = served.source_id, served.source_attempt
        entry.replayable = True
        self._write(entry)

    def record_failed(
        self, kind: str, name: str, service: str, fingerprint: str, error_code: str, started: float
    ) -> None:
        self._write(self._entry(kind, name, service, fingerprint, "failed", started, error_code=error_code))

    def _entry(
        self,
        kind: str,
        name: str,
        service: str,
        fingerprint: str,
        outcome: str,
        started: float,
        error_code: str | None = None,
    ) -> JournalEntry:
        with self._lock:
            seq, self._seq = self._seq, self._seq + 1
        return JournalEntry(
            execution_id=self.execution_id,
            task=self.task,
            revision=self.revision,
            attempt=self.attempt,
            seq=seq,
            kind=kind,
            name=name[:200],
            service=service[:200],
            fingerprint=fingerprint,
            outcome=outcome,
            error_code=error_code,
            response_bytes=0,
            replayable=False,
            reused=False,
            tokens_in=0,
            tokens_out=0,
            started_at=datetime.now(UTC),
            duration_ms=round((self.clock() - started) * 1000, 3),
        )

    def _bounded(self, answer: str | None) -> tuple[str | None, str | None, int]:
        if answer is None:
            return None, None, 0
        redacted = redact(answer)
        size = len(redacted.encode())
        digest = hashlib.sha256(redacted.encode()).hexdigest()
        with self._lock:
            if size > self.limits.max_call_bytes or self._bytes + size > self.limits.max_execution_bytes:
                return None, digest, size  # kept by its hash: not replayable
            self._bytes += size
        return redacted, digest, size

    def _write(self, entry: JournalEntry) -> None:
        with self.db.transaction("journal.record") as s:
            journal.record(s, entry, webhook_events=self.tape.webhooks)


# ----- answers as JSON, and back


def encode_llm(answer: Any) -> str:
    """An LLM call's answer: text, the native tool calls the model asked for, or the structured
    output it returned."""
    if isinstance(answer, str):
        return json.dumps({"type": "text", "text": answer})
    if isinstance(answer, BaseModel):
        return json.dumps({"type": "model", "data": answer.model_dump(mode="json")})
    if isinstance(answer, list) and all(_is_tool_call(c) for c in answer):
        return json.dumps({"type": "tool_calls", "calls": [_tool_call_dict(c) for c in answer]})
    raise NotReplayable(type(answer).__name__)


def decode_llm(stored: str, response_model: Any = None) -> Any:
    data = json.loads(stored)
    if data["type"] == "text":
        return data["text"]
    if data["type"] == "model":
        if response_model is None:
            raise NotReplayable("a structured answer without its model")
        return response_model.model_validate(data["data"])
    # CrewAI reads OpenAI-shaped tool calls given as dicts (agent_utils.extract_tool_call_info).
    return data["calls"]


def _is_tool_call(call: Any) -> bool:
    data = _tool_call_dict(call)
    return isinstance(data, dict) and isinstance(data.get("function"), dict)


def _tool_call_dict(call: Any) -> Any:
    if isinstance(call, dict):
        return call
    dump = getattr(call, "model_dump", None)
    return dump(mode="json") if callable(dump) else None


def encode_tool(result: Any) -> str:
    """A tool's answer: text, JSON data, or CrewAI's ToolFailure."""
    from crewai.tools.tool_failure import ToolFailure

    if isinstance(result, ToolFailure):
        return json.dumps({"type": "tool_failure", "data": result.model_dump(mode="json")})
    if isinstance(result, str):
        return json.dumps({"type": "text", "text": result})
    try:
        return json.dumps({"type": "json", "data": result}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NotReplayable(type(result).__name__) from exc


def decode_tool(stored: str) -> Any:
    from crewai.tools.tool_failure import ToolFailure

    data = json.loads(stored)
    if data["type"] == "text":
        return data["text"]
    if data["type"] == "tool_failure":
        return ToolFailure.model_validate(data["data"])
    return data["data"]
