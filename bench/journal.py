"""Section 7, the call journal: what it costs per call, and what it saves on a retry.

- Overhead per call, on SQLite (a WAL file, as the stack uses it) and on PostgreSQL: what the
  journal adds to a live LLM call (fingerprinting the request, the tape lookup that misses on a
  first attempt, encoding the answer, and ``AttemptJournal.record_live``: one committed insert with
  the task's totals update), and what a served call of a retry costs instead of the provider
  (fingerprint, the lookup that hits, decoding, ``record_replayed``). The journal is crewrun's
  real one on a real execution and task row; the request is what CrewAI sends mid-task (system
  prompt, task prompt, two earlier tool rounds with their results), built once, one variant per
  call so every call has its own fingerprint as in a real attempt.
- Re-paid calls, on the embedded stack, counted from the simulator's own request log: a task whose
  agent makes 4 LLM calls and 3 tool calls fails at its last LLM call (one 503) and is retried;
  every call of the retry is a call paid for again. With the journal's replay the retry makes only
  the call that failed; with ``"replay": false`` in the crew spec (the journal still records) it
  makes all seven again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, event, text

from activities.call_journal import AttemptJournal, decode_llm, encode_llm
from activities.fingerprints import llm_fingerprint
from backend.db import journal
from backend.db.engine import upgrade_database
from backend.db.store import Store
from backend.exceptions.records import ErrorRecord
from backend.pricing import Usage
from backend.settings import Settings, ToolSetting
from backend.stack import Stack
from bench.analytics import PG_ADMIN_URL
from bench.faults import FAST, finished, sim_calls
from bench.procs import progress
from bench.recovery import wait_for
from bench.samples import error_records
from bench.stats import Figure, interleaved, ms, p50, p99, ratio_figure, table

REPO = Path(__file__).resolve().parent.parent
DATABASES = ("sqlite", "postgresql")
PATHS = ("record", "replay")
MODEL, SERVICE, TASK, AGENT = "gpt-4o-mini", "openai", "look", "looker"
# The request of a call in the middle of a task, as CrewAI sends it with native tool calling.
SYSTEM_BYTES, USER_BYTES, TOOL_RESULT_BYTES, EARLIER_ROUNDS, ANSWER_BYTES = 1500, 1000, 500, 2, 400
STOP = ("\nObservation:",)
WARMUP_CALLS = 20
SQLITE_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
TARGET_MS = 2.0  # the target for a live call's overhead, p50, on each database
# The parts of a record the diagnostic run times, each with what would shrink it (said for the
# largest parts when the target is missed).
RECORD_PARTS = {
    "before the journal (fingerprint, lookup, answer)": (
        "fingerprinting hashes the canonical JSON of the whole request, which grows with the conversation"
    ),
    "journal's own work (price, redaction, row)": (
        "pricing the call from genai-prices' table and redacting the answer, before the transaction"
    ),
    "checkout + BEGIN": "a checkout from the pool (on PostgreSQL with its pre-ping: one round trip)",
    "SQL statements": "each statement is a round trip; the row and the totals in one statement would save one",
    "COMMIT": (
        "once per call, since each call is committed before its answer is used; PostgreSQL flushes its WAL "
        "to disk before answering (its settings above): `SET LOCAL synchronous_commit = off` in the journal's "
        "transactions would remove that wait, at the price of losing the last calls' rows if the database "
        "server itself crashes (a retry would then re-pay them)"
    ),
    "the rest (building statements, ORM flush, session)": (
        "SQLAlchemy building and compiling the statements and the ORM flushing the row, in Python; fewer "
        "statements, or statements built once, would cut it"
    ),
}
# On the stack: the agent calls the lookup tool this many times, then answers; its last LLM call
# gets one 503, so the first attempt makes every call of the task and fails at the last one.
TOOL_ROUNDS = 3
TASK_CALLS = 2 * TOOL_ROUNDS + 1  # 4 LLM calls, 3 tool calls
MODES = {"replay": "with the journal (replay on)", "no replay": 'without (crew spec `"replay": false`)'}
# The stack's workers need a tool that calls the simulator's tool service: the tests' LookupTool,
# the same the journal's end-to-end tests use (it reads CREWRUN_TEST_SIM_URL when called).
LOOKUP = ToolSetting(ref="tests.crews.tools:LookupTool")


@dataclass
class JournalResult:
    reps: int
    calls: int  # per repetition, database and path
    executions: int  # per repetition and mode, on the stack
    p50_ms: dict[tuple[str, str], Figure] = field(default_factory=dict)  # (database, path)
    p99_ms: dict[tuple[str, str], Figure] = field(default_factory=dict)
    tape_ms: dict[str, Figure] = field(default_factory=dict)  # reading a retry's tape, per attempt
    request_bytes: int = 0
    parts: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # diagnostic run, p50
    round_trip_ms: dict[str, float] = field(default_factory=dict)
    durability: dict[str, str] = field(default_factory=dict)  # database -> its commit settings, as read
    repaid: dict[str, Figure] = field(default_factory=dict)  # mode -> mean re-paid calls per retry
    repaid_each: dict[str, list[int]] = field(default_factory=dict)  # mode -> every retry's count
    shapes: dict[str, set[str]] = field(default_factory=dict)  # mode -> "n LLM + m tool" seen

    def add(self, key: tuple[str, str], seconds: list[float]) -> None:
        self.p50_ms.setdefault(key, Figure()).add(ms(p50(seconds)))
        self.p99_ms.setdefault(key, Figure()).add(ms(p99(seconds)))

    @property
    def repaid_ratio(self) -> Figure:
        return ratio_figure(self.repaid["replay"], self.repaid["no replay"])


# ---------------------------------------------------------------- overhead per call


def prose(n: int, topic: str) -> str:
    """Readable text of exactly n characters: the fingerprint hashes it, so only its size matters,
    but a real prompt is prose, not one repeated byte."""
    sentence = (
        f"The {topic} notes say the otter population along the northern coast has grown since "
        "last spring's survey, citing three independent counts and a regional office report. "
    )
    return (sentence * (n // len(sentence) + 1))[:n]


def lookup_tool_schema() -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a fact up in the reference service.",
                "strict": True,
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string", "description": "What to look up"}},
                    "required": ["query"],
                    "additionalProperties": False,
                },
            },
        }
    ]


def llm_request(call: int) -> list[dict[str, Any]]:
    """A mid-task request: the agent's system prompt (with CrewAI's date line), the task prompt,
    and the earlier tool rounds (the model's tool call, the tool's result). ``call`` makes the
    task prompt, hence the fingerprint, differ per call."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prose(SYSTEM_BYTES, "backstory") + "\n\nCurrent Date: 2026-01-15"},
        {
            "role": "user",
            "content": f"Current Task: look up otters, step {call}\n" + prose(USER_BYTES, "task"),
        },
    ]
    for r in range(EARLIER_ROUNDS):
        call_id = f"call_{uuid.uuid4().hex[:24]}"  # random per live call, as the provider's are
        arguments = json.dumps({"query": f"otters, round {r + 1}"})
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "lookup", "arguments": arguments},
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call_id,
                "name": "lookup",
                "content": prose(TOOL_RESULT_BYTES, "tool"),
            }
        )
    return messages


def fingerprint(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    return llm_fingerprint(MODEL, messages, tools, None, STOP)


def new_execution(store: Store) -> str:
    """A real execution with its task row, so the totals UPDATE of every record hits a row."""
    spec = {
        "name": "bench-journal",
        "agents": [{"name": AGENT, "role": "Looker", "goal": "Look things up", "llm": {"model": MODEL}}],
        "tasks": [
            {"name": TASK, "description": "Look up otters", "expected_output": "facts", "agent": AGENT}
        ],
    }
    execution, _ = store.create_execution(
        crew_id=None, crew_name="bench-journal", spec=spec, inputs={}, idempotency_key=None, request_hash=None
    )
    return execution.id


def attempt_journal(store: Store, execution_id: str, attempt: int) -> tuple[AttemptJournal, float]:
    """The attempt's journal as the activity builds it, and the seconds reading its tape took."""
    started = time.perf_counter()
    with store.db.read() as s:
        tape = journal.tape(s, execution_id, TASK, 0, attempt)
    took = time.perf_counter() - started
    j = AttemptJournal(store.db, execution_id=execution_id, task=TASK, revision=0, attempt=attempt, tape=tape)
    return j, took


class DbWatch:
    """Where a record's time goes, from SQLAlchemy's events: the journal's own work before its
    transaction (price, redaction, hash, the row), the pool checkout (with PostgreSQL's pre-ping)
    and BEGIN, the SQL statements (cursor execute to its return), the COMMIT (the last statement's
    return to the session's after_commit), and the rest (building and compiling the statements,
    the ORM's flush, closing the session). The listeners cost a few µs each, so they are attached
    only for a diagnostic run after the measured repetitions."""

    LISTENERS = (
        ("engine", "before_cursor_execute", "_before"),
        ("engine", "after_cursor_execute", "_after"),
        ("sessions", "after_transaction_create", "_created"),
        ("sessions", "after_begin", "_begun"),
        ("sessions", "after_commit", "_committed"),
    )

    sql: float
    statements: int
    created: float  # the transaction block entered
    begun: float  # its connection checked out, BEGIN sent
    last: float  # the last statement returned
    committed: float

    def __init__(self, store: Store) -> None:
        self.engine, self.sessions = store.db.engine, store.db.sessions
        self.parts: dict[tuple[str, str], dict[str, list[float]]] = {}
        self.begin()

    def __enter__(self) -> DbWatch:
        for target, name, method in self.LISTENERS:
            event.listen(getattr(self, target), name, getattr(self, method))
        return self

    def __exit__(self, *exc: object) -> None:
        for target, name, method in self.LISTENERS:
            event.remove(getattr(self, target), name, getattr(self, method))

    def _before(self, *args: Any) -> None:
        self._started = time.perf_counter()

    def _after(self, *args: Any) -> None:
        self.last = time.perf_counter()
        self.sql += self.last - self._started
        self.statements += 1

    def _created(self, *args: Any) -> None:
        self.created = self.created or time.perf_counter()  # the first: the transaction block

    def _begun(self, *args: Any) -> None:
        self.begun = self.begun or time.perf_counter()

    def _committed(self, *args: Any) -> None:
        self.committed = time.perf_counter()

    def begin(self) -> None:
        self.sql, self.statements, self._started = 0.0, 0, 0.0
        self.created, self.begun, self.last, self.committed = 0.0, 0.0, 0.0, 0.0

    def end(self, key: tuple[str, str], t0: float, t1: float, t2: float) -> None:
        commit = self.committed - self.last
        spans = (t1 - t0, self.created - t1, self.begun - self.created, self.sql, commit)
        parts = self.parts.setdefault(key, {})
        for part, value in zip(RECORD_PARTS, (*spans, t2 - t0 - sum(spans)), strict=True):
            parts.setdefault(part, []).append(value)
        parts.setdefault("statements", []).append(float(self.statements))


def record_calls(
    store: Store,
    execution_id: str,
    requests: list[list[dict[str, Any]]],
    tools: list[dict[str, Any]],
    watch: tuple[DbWatch, str] | None = None,
) -> list[float]:
    """A first attempt's live calls: the seconds each took."""
    j, _ = attempt_journal(store, execution_id, 1)
    answer = "Final Answer: " + prose(ANSWER_BYTES, "answer")
    # What the provider would bill, at about 4 characters a token (the simulator's rule).
    usage = Usage(input_tokens=len(json.dumps(requests[0])) // 4, output_tokens=len(answer) // 4)
    totals = []
    for messages in requests:
        started, t0 = time.monotonic(), time.perf_counter()
        fp = fingerprint(messages, tools)
        if j.served("llm", fp) is not None:
            raise RuntimeError("a first attempt was served a call")
        stored = encode_llm(answer)
        t1 = time.perf_counter()
        if watch is not None:
            watch[0].begin()
        j.record_live("llm", MODEL, SERVICE, fp, stored, started, usage=usage, provider="openai")
        t2 = time.perf_counter()
        if watch is not None:
            watch[0].end((watch[1], "record"), t0, t1, t2)
        totals.append(t2 - t0)
    # The attempt failed (why a retry follows): its error event makes each served call also move
    # its source's cost out of the task's wasted total, as on a real retry.
    record = ErrorRecord.from_dict(dict(error_records(1)[0], attempt=1))
    store.record_attempt_failure(execution_id, TASK, record=record, final=False)
    return totals


def replay_calls(
    store: Store,
    execution_id: str,
    requests: list[list[dict[str, Any]]],
    tools: list[dict[str, Any]],
    watch: tuple[DbWatch, str] | None = None,
) -> tuple[list[float], float]:
    """The retry of that attempt, every call served from the tape: the seconds each took, and
    the seconds reading the tape took."""
    j, tape_s = attempt_journal(store, execution_id, 2)
    totals = []
    for index, messages in enumerate(requests):
        started, t0 = time.monotonic(), time.perf_counter()
        fp = fingerprint(messages, tools)
        served = j.served("llm", fp)
        if served is None:
            raise RuntimeError(f"call {index} of the retry was not served: its fingerprint differs")
        decode_llm(served.response)
        t1 = time.perf_counter()
        if watch is not None:
            watch[0].begin()
        j.record_replayed("llm", MODEL, SERVICE, served, started)
        t2 = time.perf_counter()
        if watch is not None:
            watch[0].end((watch[1], "replay"), t0, t1, t2)
        totals.append(t2 - t0)
    return totals, tape_s


def round_trip_s(store: Store, n: int) -> float:
    """p50 of a bare ``SELECT 1`` on a pooled connection: the floor under every statement."""
    times = []
    with store.db.engine.connect() as conn:
        for _ in range(n):
            started = time.perf_counter()
            conn.execute(text("SELECT 1"))
            times.append(time.perf_counter() - started)
    return p50(times)


def diagnose(
    stores: dict[str, Store],
    requests: list[list[dict[str, Any]]],
    tools: list[dict[str, Any]],
    r: JournalResult,
) -> None:
    """One more record and replay run per database with the listeners attached: p50 of each part."""
    for db, store in stores.items():
        r.round_trip_ms[db] = ms(round_trip_s(store, len(requests)))
        r.durability[db] = durability(store, db)
        with DbWatch(store) as watch:
            execution = new_execution(store)
            record_calls(store, execution, requests, tools, (watch, db))
            replay_calls(store, execution, requests, tools, (watch, db))
        for key, parts in watch.parts.items():
            r.parts[key] = {
                part: p50(values) if part == "statements" else ms(p50(values))
                for part, values in parts.items()
            }


def durability(store: Store, db: str) -> str:
    """What a COMMIT waits for on this database, as the server or file says (not as assumed)."""
    if db == "sqlite":
        queries = {"journal_mode": "PRAGMA journal_mode", "synchronous": "PRAGMA synchronous"}
    else:
        queries = {name: f"SHOW {name}" for name in ("synchronous_commit", "fsync", "wal_sync_method")}
    with store.db.engine.connect() as conn:
        found = {name: conn.execute(text(q)).scalar() for name, q in queries.items()}
    if "synchronous" in found:  # SQLite answers with the level's number
        found["synchronous"] = SQLITE_SYNCHRONOUS.get(int(found["synchronous"] or 0), found["synchronous"])
    return ", ".join(f"{name}={value}" for name, value in found.items())


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A database of its own on the local server (as the analytics section gets one), dropped after."""
    name = f"crewrun_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def open_store(url: str) -> Store:
    upgrade_database(url)
    return Store.from_url(url)


def measure_overhead(work: Path, r: JournalResult) -> JournalResult:
    """REPS repetitions of (sqlite record, postgresql record, sqlite replay, postgresql replay):
    each record run is a new execution's first attempt of ``r.calls`` calls, the replay run after
    it that execution's retry."""
    tools = lookup_tool_schema()
    requests = [llm_request(i) for i in range(r.calls)]
    r.request_bytes = len(json.dumps(requests[0]))
    with postgres_database() as pg_url:
        stores = {"sqlite": open_store(f"sqlite:///{work / 'journal.db'}"), "postgresql": open_store(pg_url)}
        try:
            for store in stores.values():  # connections, statement caches, the price table
                warm = new_execution(store)
                record_calls(store, warm, requests[:WARMUP_CALLS], tools)
                replay_calls(store, warm, requests[:WARMUP_CALLS], tools)
            executions: dict[str, str] = {}
            variants = [f"{db} {path}" for path in PATHS for db in DATABASES]
            for rep, variant in interleaved(r.reps, variants):
                db, path = variant.split()
                store = stores[db]
                if path == "record":
                    executions[db] = new_execution(store)
                    totals = record_calls(store, executions[db], requests, tools)
                else:
                    totals, tape_s = replay_calls(store, executions[db], requests, tools)
                    r.tape_ms.setdefault(db, Figure()).add(ms(tape_s))
                r.add((db, path), totals)
                progress(
                    f"journal rep {rep + 1}/{r.reps} {variant}: p50 {ms(p50(totals)):.2f} ms, "
                    f"p99 {ms(p99(totals)):.2f} ms per call"
                )
            diagnose(stores, requests, tools, r)
        finally:
            for store in stores.values():
                store.db.engine.dispose()
    return r


# ---------------------------------------------------------------- re-paid calls on the stack


def with_lookup_tool(settings: Settings) -> Settings:
    """The stack's settings with the lookup tool in the workers' registry (a JSON spec names it)."""
    return settings.model_copy(update={"tools": {**settings.tools, "lookup": LOOKUP}})


def worker_env(settings: Settings) -> dict[str, str]:
    """What the workers need to run the lookup tool, for every worker of the stack, also those
    spawned later (recovery's standbys): the simulator's URL, and the repo root importable
    whatever directory the benchmark was started from (the tool lives in tests/)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"CREWRUN_TEST_SIM_URL": f"http://127.0.0.1:{settings.simulator_port}", "PYTHONPATH": path}


def task_spec(sim: str, agent: str, replay: bool) -> dict[str, Any]:
    """One task of one agent with the lookup tool. The agent (its own simulator path) and its LLM
    service (its own breaker) are the execution's own, so the log and the breakers keep the
    executions apart; backoff shortened, budget unchanged."""
    return {
        "name": f"bench-{agent}",
        "replay": replay,
        "retry": {"external_service": FAST},
        "agents": [
            {
                "name": agent,
                "role": "Looker",
                "goal": "Look {topic} up",
                "llm": {
                    "model": MODEL,
                    "base_url": f"{sim}/agents/{agent}/v1",
                    "timeout_s": 10,
                    "service": agent,
                },
                "tools": ["lookup"],
            }
        ],
        "tasks": [
            {"name": TASK, "description": "Look up {topic}", "expected_output": "facts", "agent": agent}
        ],
    }


def start_failing_once(stack: Stack, agent: str, replay: bool) -> str:
    sim, api = stack.simulator_url, stack.api_url
    httpx.post(f"{sim}/_sim/agents/{agent}", json={"tool_rounds": TOOL_ROUNDS}).raise_for_status()
    rule = {"kind": "server_error", "status": 503, "agent": agent, "after": TOOL_ROUNDS, "count": 1}
    httpx.post(f"{sim}/_sim/faults", json=rule).raise_for_status()
    body = {"crew": task_spec(sim, agent, replay), "inputs": {"topic": f"otters of {agent}"}}
    r = httpx.post(f"{api}/api/v1/executions", json=body, timeout=30)
    if r.status_code != 202:
        raise RuntimeError(f"starting {agent}'s execution: {r.status_code} {r.text[:500]}")
    return str(r.json()["id"])


def calls_of(calls: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    """The execution's provider and tool-service calls, in arrival order. A tool call names the
    agent in its arguments (the simulated model writes ``<agent> on: <task>`` into them)."""
    mine = [
        c
        for c in calls
        if (c["kind"] == "llm" and c["agent"] == agent)
        or (c["kind"] == "tool" and f'"{agent} on:' in (c["args"] or ""))
    ]
    return sorted(mine, key=lambda c: c["seq"])


def split(calls: list[dict[str, Any]]) -> str:
    llm = sum(1 for c in calls if c["kind"] == "llm")
    return f"{llm} LLM + {len(calls) - llm} tool"


def retry_calls(calls: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    """The calls after the first attempt's failed one; the first attempt must have made the
    whole task (else the count would mean something else)."""
    mine = calls_of(calls, agent)
    failed = next((i for i, c in enumerate(mine) if c["outcome"] != "ok"), None)
    if failed is None or failed + 1 != TASK_CALLS or mine[failed]["kind"] != "llm":
        raise RuntimeError(f"{agent}: the first attempt did not fail at call {TASK_CALLS}: {split(mine)}")
    return mine[failed + 1 :]


def repay_once(stack: Stack, r: JournalResult, rep: int) -> None:
    """``r.executions`` executions per mode, all at once; per mode the mean re-paid calls."""
    api, tag = stack.api_url, uuid.uuid4().hex[:6]
    started = {
        (mode, f"jr-{tag}-{mode.replace(' ', '')}-{i}"): "" for mode in MODES for i in range(r.executions)
    }
    for mode, agent in started:
        started[(mode, agent)] = start_failing_once(stack, agent, replay=mode == "replay")
    for (_, agent), eid in started.items():
        body = wait_for(lambda eid=eid: finished(api, eid), 180, f"{agent}'s execution to end", 0.2)
        if body["status"] != "completed" or body["tasks"][0]["attempts"] != 2:
            raise RuntimeError(f"{agent}: {body['status']} after {body['tasks'][0]['attempts']} attempt(s)")
    calls = sim_calls(stack)
    for mode in MODES:
        counts = []
        for m, agent in started:
            if m == mode:
                again = retry_calls(calls, agent)
                counts.append(len(again))
                r.shapes.setdefault(mode, set()).add(split(again))
        r.repaid_each.setdefault(mode, []).extend(counts)
        r.repaid.setdefault(mode, Figure()).add(sum(counts) / len(counts))
    progress(
        f"journal rep {rep + 1}/{r.reps}: a retry re-paid {r.repaid['replay'].values[-1]:.1f} calls with "
        f"the journal, {r.repaid['no replay'].values[-1]:.1f} without"
    )


def lookup_registered(api: str) -> bool:
    tools = httpx.get(f"{api}/api/v1/tools", timeout=10).json()
    return any(t["name"] == "lookup" for t in tools)


def measure_repay(stack: Stack, r: JournalResult) -> JournalResult:
    # A worker registers its tools once it is up; the API refuses a spec naming an unknown one.
    wait_for(lambda: lookup_registered(stack.api_url), 120, "a worker to register the lookup tool", 0.5)
    httpx.post(f"{stack.simulator_url}/_sim/heal").raise_for_status()
    for rep in range(r.reps):
        repay_once(stack, r, rep)
    httpx.post(f"{stack.simulator_url}/_sim/heal").raise_for_status()
    return r


# ---------------------------------------------------------------- the section


def markdown(r: JournalResult) -> str:
    label = {
        "record": "live call: fingerprint + `record_live`",
        "replay": "served call: fingerprint + `record_replayed`",
    }
    repay_rows = [
        [MODES[mode], "; ".join(sorted(r.shapes.get(mode, ()))), r.repaid[mode].fmt("{:.1f}")]
        for mode in MODES
        if mode in r.repaid
    ]
    if "replay" in r.repaid and "no replay" in r.repaid:
        repay_rows.append(["with / without", "", r.repaid_ratio.fmt("{:.2f}")])
    return "\n\n".join(
        [
            *overhead_text(r, label),
            f"**Calls a retry re-pays** (target: 1 with the journal). On the embedded stack (A), one task "
            f"whose agent calls the lookup tool {TOOL_ROUNDS} times and then answers ({TOOL_ROUNDS + 1} LLM "
            f"calls, {TOOL_ROUNDS} tool calls); its last LLM call gets one 503, so the first attempt makes every "
            f"call and fails at the last; the task is retried. {r.executions} executions per mode and "
            f"repetition, both modes at once, {r.reps} repetitions. Counted from the simulator's request log "
            "(provider and tool service): every call after the first attempt's failed one; the figure is the "
            "mean over a repetition's executions.",
            table(["mode", "the retry's calls (LLM + tool)", "calls re-paid per retry"], repay_rows),
        ]
    )


def overhead_text(r: JournalResult, label: dict[str, str]) -> list[str]:
    rows = [
        [
            db,
            label[path],
            r.p50_ms[(db, path)].fmt("{:.2f}", " ms"),
            r.p99_ms[(db, path)].fmt("{:.2f}", " ms"),
        ]
        for path in PATHS
        for db in DATABASES
        if (db, path) in r.p50_ms
    ]
    tape_rows = [[db, fig.fmt("{:.1f}", " ms")] for db, fig in r.tape_ms.items()]
    names = list(next(iter(r.parts.values()), {}))
    part_rows = [
        [db, path, *(f"{v:.0f}" if n == "statements" else f"{v:.3f} ms" for n, v in parts.items())]
        for (db, path), parts in r.parts.items()
    ]
    missed = [
        db for db in DATABASES if (db, "record") in r.p50_ms and r.p50_ms[(db, "record")].median > TARGET_MS
    ]
    return [
        f"**Overhead per call** (target: live call p50 ≤ {TARGET_MS:g} ms on each database). crewrun's own "
        "`AttemptJournal` on a real execution and task row; per call: fingerprinting an LLM request "
        f"as CrewAI sends it mid-task ({r.request_bytes:,} bytes of JSON: a {SYSTEM_BYTES:,}-character "
        f"system prompt with the date line, a {USER_BYTES:,}-character task prompt, {EARLIER_ROUNDS} earlier "
        f"tool rounds with {TOOL_RESULT_BYTES}-character results, the tool's schema), the tape lookup, "
        f"the answer ({ANSWER_BYTES} characters) encoded or decoded, and the record: one committed "
        "transaction (the row, and the task's token and cost totals for a live call; the source marked "
        "reused and the wasted total corrected for a served one). "
        f"{r.calls} calls per run; each record run is a new execution's first attempt, the replay run "
        f"its retry with every call served; {r.reps} repetitions of (SQLite record, PostgreSQL record, "
        "SQLite replay, PostgreSQL replay), after a warm-up. SQLite: a file in the work directory with "
        f"crewrun's pragmas ({r.durability.get('sqlite', 'n/a')}); PostgreSQL: a database of its own on "
        f"the local server ({r.durability.get('postgresql', 'n/a')}).",
        table(["database", "path", "p50 per call", "p99 per call"], rows),
        "Reading a retry's tape (once per attempt, every call of the first attempt):",
        table(["database", f"tape of {r.calls} calls"], tape_rows),
        "Where the time goes: one more record and replay run per database after the repetitions, with "
        "SQLAlchemy's event listeners timing each part (p50 per call; the listeners add a few µs). A bare "
        "`SELECT 1` round trip on a pooled connection, for scale: "
        + ", ".join(f"{db} {v:.3f} ms" for db, v in r.round_trip_ms.items())
        + ".",
        table(["database", "path", *names], part_rows),
        *([missed_text(r, missed)] if missed else []),
    ]


def missed_text(r: JournalResult, missed: list[str]) -> str:
    """The live call's largest parts on each database that missed, and what would shrink them."""
    lines = []
    for db in missed:
        parts = {k: v for k, v in r.parts.get((db, "record"), {}).items() if k in RECORD_PARTS}
        largest = sorted(parts.items(), key=lambda kv: -kv[1])[:2]
        lines.append(
            f"- {db}: "
            + "; ".join(f"{part}, {value:.2f} ms: {RECORD_PARTS[part]}" for part, value in largest)
            + "."
        )
    return (
        f"**The live call misses its {TARGET_MS:g} ms target on {' and '.join(missed)}.** Its largest "
        "parts in the diagnostic run, and what would shrink them (no product code was changed here):\n\n"
        + "\n".join(lines)
    )
