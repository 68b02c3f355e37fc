"""Section 5, error analytics at scale: insert rate through crewrun's real write path
(Store.record_attempt_failure, one transaction per failed attempt, as the activity does it), and
latency of GET /api/v1/errors/groups and /errors/trends through the real FastAPI app (in-process
ASGI client) on 100k events in SQLite and 1M events in PostgreSQL.

The bulk load bypasses the write path on purpose (it would take hours): SQLAlchemy Core
executemany on SQLite, one INSERT … SELECT generate_series on PostgreSQL. The variety is
realistic: 50 fingerprints with a skewed (power-law-ish) frequency, 8 codes in 6 categories,
4 services, 3 tasks, 2,000 executions, timestamps spread evenly over the last 30 days in insertion
order (events arrive in time order in a real deployment, so the heap is clustered by time).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, insert, text

from backend.api.app import create_app
from backend.db.analytics import ErrorAnalytics, ErrorFilter, default_since
from backend.db.database import Database
from backend.db.engine import make_engine, make_session_factory, upgrade_database
from backend.db.models import ErrorEvent, Execution
from backend.db.store import Store
from backend.exceptions.records import ErrorRecord
from backend.settings import Settings
from bench.procs import progress
from bench.samples import error_records
from bench.stats import Figure, ms, p50, p99, table

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FINGERPRINTS = 50
EXECUTIONS = 2000
# (code, category, severity): what a month of a busy deployment's errors is made of
CODES = [
    ("LLM_RATE_LIMITED", "rate_limit", "medium"),
    ("LLM_PROVIDER_OVERLOADED", "external_service", "high"),
    ("LLM_PROVIDER_ERROR", "external_service", "high"),
    ("LLM_TIMEOUT", "timeout", "medium"),
    ("NETWORK_CONNECT_FAILED", "network", "medium"),
    ("LLM_OUTPUT_INVALID", "llm_output", "low"),
    ("LLM_AUTH_FAILED", "authentication", "critical"),
    ("INTERNAL_ERROR", "internal", "critical"),
]
SERVICES = ["openai", "anthropic", "azure-openai", "sim-llm"]
TASKS = [("research", "researcher"), ("analyse", "analyst"), ("write", "writer")]
STACK = "Traceback (most recent call last):\n" + "".join(
    f'  File "/srv/app/.venv/lib/python3.11/site-packages/pkg/mod{i}.py", line {10 * i}, in call\n    return f(x)\n'
    for i in range(4)
)
ENDPOINTS = ("groups", "trends")


@dataclass
class DbResult:
    backend: str
    events: int
    load_s: float = 0.0
    write_per_s: Figure = field(default_factory=Figure)
    p50_ms: dict[str, Figure] = field(default_factory=dict)
    p99_ms: dict[str, Figure] = field(default_factory=dict)
    explain: dict[str, str] = field(default_factory=dict)
    direct_ms: dict[str, float] = field(default_factory=dict)  # the SQL alone, without HTTP/FastAPI

    def add(self, what: str, latencies: list[float]) -> None:
        self.p50_ms.setdefault(what, Figure()).add(ms(p50(latencies)))
        self.p99_ms.setdefault(what, Figure()).add(ms(p99(latencies)))


def fingerprint_of(f: int) -> tuple[str, str, str, str, str]:
    code, category, severity = CODES[f % len(CODES)]
    return f"{f:016x}", code, category, severity, SERVICES[f % len(SERVICES)]


def _executions_rows(now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "id": f"bench-exec-{i:06d}",
            "crew_name": f"crew-{i % 20}",
            "spec": {},
            "inputs": {},
            "status": "failed",
            "workflow_id": f"bench-wf-{i:06d}",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(EXECUTIONS)
    ]


def load_sqlite(engine: Engine, events: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(Execution), _executions_rows(now))
    chunk: list[dict[str, Any]] = []
    for g in range(events):
        f = int(rng.random() ** 2 * FINGERPRINTS)  # a few loud problems, a long tail of rare ones
        fp, code, category, severity, service = fingerprint_of(f)
        task, agent = TASKS[g % 3]
        chunk.append(
            {
                "execution_id": f"bench-exec-{g % EXECUTIONS:06d}",
                "crew_id": None,
                "task": task,
                "agent": agent,
                "attempt": g,
                "category_attempt": 1 + g % 5,
                "max_attempts": 6,
                "code": code,
                "category": category,
                "severity": severity,
                "retryable": category not in ("authentication", "internal"),
                "service": service,
                "message": f"{code}: provider said no (problem {f}) for request req_{g % 9973}",
                "exception_type": "openai.APIStatusError",
                "fingerprint": fp,
                "status_code": 500 + f % 30,
                "provider_code": None,
                "retry_after_s": None,
                "next_retry_delay_s": 1.5,
                "stack": STACK,
                "cause_chain": [],
                "occurred_at": now - timedelta(seconds=(1 - (g + rng.random()) / events) * 30 * 86400),
                "attempt_started_at": None,
            }
        )
        if len(chunk) == 10_000:
            with engine.begin() as conn:
                conn.execute(insert(ErrorEvent), chunk)
            chunk = []
    if chunk:
        with engine.begin() as conn:
            conn.execute(insert(ErrorEvent), chunk)


def load_postgres(engine: Engine, events: int) -> None:
    codes = ", ".join(f"'{c}'" for c, _, _ in CODES)
    categories = ", ".join(f"'{c}'" for _, c, _ in CODES)
    severities = ", ".join(f"'{s}'" for _, _, s in CODES)
    services = ", ".join(f"'{s}'" for s in SERVICES)
    with engine.begin() as conn:
        conn.execute(insert(Execution), _executions_rows(datetime.now(UTC)))
        conn.execute(text("SELECT setseed(0.1)"))
        # f: fingerprint index, skewed like the SQLite load; every column derived from it agrees.
        conn.execute(
            text(f"""
            INSERT INTO error_events (execution_id, crew_id, task, agent, attempt, category_attempt, max_attempts,
                code, category, severity, retryable, service, message, exception_type, fingerprint, status_code,
                provider_code, retry_after_s, next_retry_delay_s, stack, cause_chain, occurred_at,
                attempt_started_at)
            SELECT 'bench-exec-' || lpad((g % {EXECUTIONS})::text, 6, '0'), NULL,
                (ARRAY['research','analyse','write'])[1 + g % 3], (ARRAY['researcher','analyst','writer'])[1 + g % 3],
                g, 1 + g % 5, 6,
                (ARRAY[{codes}])[1 + f % {len(CODES)}], (ARRAY[{categories}])[1 + f % {len(CODES)}],
                (ARRAY[{severities}])[1 + f % {len(CODES)}], (f % {len(CODES)}) < 6,
                (ARRAY[{services}])[1 + f % {len(SERVICES)}],
                (ARRAY[{codes}])[1 + f % {len(CODES)}] || ': provider said no (problem ' || f
                    || ') for request req_' || (g % 9973),
                'openai.APIStatusError', lpad(to_hex(f), 16, '0'), 500 + f % 30, NULL, NULL, 1.5,
                :stack, '[]'::json, now() - (1 - (g + random()) / :n) * interval '30 days', NULL
            FROM (SELECT g, floor(random() ^ 2 * {FINGERPRINTS})::int AS f
                  FROM generate_series(0, :n - 1) AS g) AS s
        """),
            {"stack": STACK, "n": events},
        )
        conn.execute(text("ANALYZE"))


WRITES_PER_EXECUTION = 10  # failed attempts per execution in the write benchmark


def write_rate(store: Store, records: list[dict[str, Any]], n: int, rep: int) -> float:
    """Failed attempts recorded per second, one transaction each, as the activity boundary's
    caller does it (sequential: one worker thread's view). A task has at most its retry envelope
    of attempts, so the events go to executions of WRITES_PER_EXECUTION each, made beforehand."""
    executions = [
        store.create_execution(crew_id=None, crew_name="bench-write", inputs={}, idempotency_key=None,
                               spec={"tasks": [{"name": "research", "agent": "researcher"}]}, request_hash=None)[0]
        for _ in range(-(-n // WRITES_PER_EXECUTION))
    ]  # fmt: skip
    started = time.perf_counter()
    for i in range(n):
        record = ErrorRecord.from_dict(dict(records[i % len(records)], attempt=1_000_000 * (rep + 1) + i))
        execution = executions[i // WRITES_PER_EXECUTION]
        store.record_attempt_failure(execution.id, "research", record=record, final=False)
    return n / (time.perf_counter() - started)


async def query_latencies(client: httpx.AsyncClient, what: str, n: int) -> list[float]:
    since = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    path, params = {
        "groups": ("/api/v1/errors/groups", {}),
        "trends": ("/api/v1/errors/trends", {}),
        "groups 30 d": ("/api/v1/errors/groups", {"since": since}),
        "trends 30 d": ("/api/v1/errors/trends", {"since": since, "interval": "1d"}),
    }[what]
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = await client.get(path, params=params)
        out.append(time.perf_counter() - started)
        r.raise_for_status()
    return out


def direct_query_ms(store: Store, n: int = 3) -> dict[str, float]:
    """p50 of ErrorAnalytics called directly: the database's share of a request's latency; the
    rest is FastAPI, serialisation and the thread hop."""
    analytics = ErrorAnalytics(store.db)
    day = ErrorFilter(since=default_since())
    month = ErrorFilter(since=datetime.now(UTC) - timedelta(days=30))
    out = {}
    for what, call in (
        ("groups", lambda: analytics.groups(day, limit=50)),
        ("trends", lambda: analytics.trends(day, interval_s=3600)),
        ("groups 30 d", lambda: analytics.groups(month, limit=50)),
        ("trends 30 d", lambda: analytics.trends(month, interval_s=86400)),
    ):
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        out[what] = ms(p50(times))
    return out


def explain(engine: Engine, backend: str) -> dict[str, str]:
    """The plan of the groups query over the default window and over 30 days, for the write-up
    when a target is missed."""
    return {
        "groups": _explain(engine, backend, timedelta(hours=24)),
        "groups 30 d": _explain(engine, backend, timedelta(days=30)),
    }


def _explain(engine: Engine, backend: str, window: timedelta) -> str:
    since = datetime.now(UTC) - window
    groups = (
        "SELECT fingerprint, category, code, severity, count(*), count(DISTINCT execution_id), "
        "min(occurred_at), max(occurred_at), min(message) FROM error_events WHERE occurred_at >= :since "
        "GROUP BY fingerprint, category, code, severity ORDER BY count(*) DESC, fingerprint LIMIT 50"
    )
    prefix = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
    since_param = since.strftime("%Y-%m-%d %H:%M:%S.%f") if backend == "sqlite" else since
    with engine.connect() as conn:
        rows = conn.execute(text(prefix + groups), {"since": since_param}).all()
    return "\n".join(" ".join(str(c) for c in row) for row in rows)


async def measure_db(
    backend: str, url: str, events: int, reps: int, requests: int, full_requests: int, writes: int, work: Path
) -> DbResult:
    result = DbResult(backend, events)
    upgrade_database(url)
    engine = make_engine(url)
    started = time.perf_counter()
    (load_sqlite if backend == "sqlite" else load_postgres)(engine, events)
    result.load_s = time.perf_counter() - started
    progress(f"analytics {backend}: {events:,} events loaded in {result.load_s:.0f} s")
    store = Store(Database(make_session_factory(engine)))
    records = error_records()
    app = create_app(Settings(data_dir=work, database_url=url), reconcile=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=120
        ) as client,
    ):
        await query_latencies(client, "groups", 2)  # warm caches: the first query reads from disk
        await query_latencies(client, "trends", 2)
        for rep in range(reps):
            result.write_per_s.add(await asyncio.to_thread(write_rate, store, records, writes, rep))
            for what in ENDPOINTS:
                result.add(what, await query_latencies(client, what, requests))
            for what in ("groups 30 d", "trends 30 d"):
                result.add(what, await query_latencies(client, what, full_requests))
            progress(
                f"analytics {backend} rep {rep + 1}/{reps}: groups p50 {result.p50_ms['groups'].values[-1]:.0f} "
                f"ms, trends p50 {result.p50_ms['trends'].values[-1]:.0f} ms, "
                f"{result.write_per_s.values[-1]:.0f} writes/s"
            )
    result.explain = explain(engine, backend)
    result.direct_ms = direct_query_ms(store)
    engine.dispose()
    return result


async def measure(
    work: Path,
    *,
    sqlite_events: int,
    pg_events: int,
    reps: int,
    requests: int,
    full_requests: int,
    writes: int,
) -> list[DbResult]:
    results = []
    sqlite_url = f"sqlite:///{work / 'analytics.db'}"
    results.append(
        await measure_db("sqlite", sqlite_url, sqlite_events, reps, requests, full_requests, writes, work)
    )
    name = f"crewrun_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        pg_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        results.append(
            await measure_db("postgresql", pg_url, pg_events, reps, requests, full_requests, writes, work)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return results


def markdown(results: list[DbResult], reps: int, requests: int, full_requests: int, writes: int) -> str:
    rows = []
    for r in results:
        for what in (*ENDPOINTS, "groups 30 d", "trends 30 d"):
            n = requests if what in ENDPOINTS else full_requests
            label = f"GET /errors/{what.split()[0]}" + (
                " ?since=30 d ago" if " " in what else " (default: last 24 h)"
            )
            rows.append(
                [
                    f"{r.backend}, {r.events:,} events",
                    label,
                    str(n),
                    r.p50_ms[what].fmt("{:.0f}", " ms"),
                    r.p99_ms[what].fmt("{:.0f}", " ms"),
                ]
            )
    write_rows = [[r.backend, f"{r.load_s:.0f} s", r.write_per_s.fmt("{:.0f}")] for r in results]
    return "\n\n".join(
        [
            "Events: 50 fingerprints (skewed), 8 codes in 6 categories, 4 services, 2,000 executions, "
            "timestamps spread evenly over 30 days in insertion order (the default 24 h window holds 1/30 of "
            "them). Requests "
            "through the real FastAPI app with an in-process ASGI client, one at a time; "
            f"{reps} repetitions, endpoints interleaved within each.",
            table(["database", "request", "requests per rep", "p50", "p99"], rows),
            f"Write path: `Store.record_attempt_failure` (one transaction per failed attempt, the activity's "
            f"path), {writes} sequential calls per repetition into the loaded database; bulk load time for scale.",
            table(
                ["database", "bulk load (not the write path)", "error events/s via the write path"],
                write_rows,
            ),
        ]
    )


def diagnosis(results: list[DbResult], missed: list[tuple[DbResult, str]]) -> str:
    """Where the time of the missed requests goes: the SQL alone vs the whole request, and the plan."""
    rows = []
    for r in results:
        for what in (*ENDPOINTS, "groups 30 d", "trends 30 d"):
            window = "30 d" if " " in what else "24 h"
            rows.append(
                [
                    f"{r.backend}, {r.events:,}",
                    f"/errors/{what.split()[0]} ({window})",
                    r.p50_ms[what].fmt("{:.0f}", " ms"),
                    f"{r.direct_ms.get(what, float('nan')):.0f} ms",
                ]
            )
    parts = [
        "**Missed: " + ", ".join(f"{r.backend} {what}" for r, what in missed) + ". Where the time goes.** "
        "The whole request vs `ErrorAnalytics` called directly (the SQL and row mapping alone, p50 of 3):",
        table(["database", "request", "HTTP p50", "SQL alone p50"], rows),
    ]
    shown: set[tuple[str, str]] = set()
    for r, what in missed:
        key = "groups 30 d" if " " in what else "groups"
        if r.explain.get(key) and (r.backend, key) not in shown:
            shown.add((r.backend, key))
            window = "30 d" if " " in what else "default 24 h"
            parts.append(
                f"Plan of the groups query on {r.backend}, {window} window (trends scans the same rows):"
                f"\n\n```\n{r.explain[key]}\n```"
            )
    parts.append(
        "Reading: compare the two right-hand columns: what is not SQL is FastAPI and serialisation. The "
        "groups query reads every event of the window from the table (the `occurred_at` index only finds "
        "them: fingerprint, category, code, severity, execution_id and message are not in it), then sorts "
        "them for GROUP BY and again for `count(DISTINCT execution_id)`"
        + (
            " (the plan above shows the sort spilling to disk: `external merge`, PostgreSQL's default 4 MB "
            "work_mem)"
            if any("external merge" in v for r in results for v in r.explain.values())
            else ""
        )
        + "; trends computes an epoch per row (`strftime('%s')` on SQLite's text timestamps). The cost "
        "is linear in the events of the window: the 30-day window (30× the events) costs "
        + ", ".join(
            f"{r.p50_ms[w + ' 30 d'].median / r.p50_ms[w].median:.0f}× the default one for {w} on {r.backend}"
            for r in results
            for w in ENDPOINTS
        )
        + ". What would "
        "fix it: (1) a covering index for the default path, `(occurred_at) INCLUDE (fingerprint, category, "
        "code, severity, execution_id)` on PostgreSQL, a composite one on SQLite, so the window is an "
        "index-only scan; (2) for long windows, a rollup table (events per hour × fingerprint × "
        "category/code/severity, plus first/last seen) maintained in the same transaction as "
        "`record_attempt_failure`, so groups/trends over 30 days read ~720 × 50 rows instead of a million; "
        "(3) drop `count(DISTINCT execution_id)` from the default response or compute it from the rollup "
        "(approximate), since it forces the sort."
    )
    return "\n\n".join(parts)
