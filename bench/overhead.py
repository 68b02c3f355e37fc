"""Section 1, orchestration overhead: the same three-task crew on the same simulator process, run
(a) in-process with crewrun's CrewAI task runner, (b) as a bare Temporal workflow whose activities
call that runner, (c) through crewrun's API on the real embedded stack. (b) and (c) use the same
Temporal dev server (the stack's: SQLite file, WAL) and a worker process each with the same pool
size, so c/b is crewrun's own cost and nothing else."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from backend.stack import Stack
from bench.bare_workflow import BARE_CREW_WORKFLOW
from bench.crew import research_spec, run_in_process, task_requests
from bench.procs import connect, progress, python_child
from bench.profiles import cpu_seconds, markdown_profile, sampled, summarise
from bench.stats import Figure, interleaved, ms, p50, p99, ratio_figure, table

VARIANTS = ("a", "b", "c")
NAMES = {"a": "(a) in-process CrewAI", "b": "(b) bare Temporal workflow", "c": "(c) crewrun via API"}
TERMINAL = ("completed", "degraded", "failed", "cancelled")
BARE_QUEUE = "bench-bare"


@dataclass
class Batch:
    latencies_s: list[float]
    wall_s: float
    workflow_ids: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.wall_s


@dataclass
class OverheadResult:
    executions: int
    concurrency: int
    reps: int
    p50_ms: dict[str, Figure] = field(default_factory=lambda: {v: Figure() for v in VARIANTS})
    p99_ms: dict[str, Figure] = field(default_factory=lambda: {v: Figure() for v in VARIANTS})
    per_s: dict[str, Figure] = field(default_factory=lambda: {v: Figure() for v in VARIANTS})
    # diagnostics of one extra, unmeasured batch per variant: CPU s per execution per process,
    # and py-spy profiles of the Python processes
    cpu_per_execution: dict[str, dict[str, float]] = field(default_factory=dict)
    profiles: dict[str, Path] = field(default_factory=dict)
    history: dict[str, dict[str, int]] = field(default_factory=dict)  # variant -> counts

    def ratio(self, top: str, bottom: str) -> Figure:
        return ratio_figure(self.p50_ms[top], self.p50_ms[bottom])

    def throughput_ratio(self, top: str, bottom: str) -> Figure:
        # Inverted so that, like the latency ratio, > 1 means "top costs more".
        return ratio_figure(self.per_s[bottom], self.per_s[top])


def run_a(spec: dict[str, Any], n: int, concurrency: int) -> Batch:
    def one(i: int) -> float:
        started = time.perf_counter()
        run_in_process(spec, {"topic": f"a-{uuid.uuid4().hex[:8]}-{i}"})
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(n)))
    return Batch(latencies, time.perf_counter() - started)


async def _bounded(n: int, concurrency: int, one: Callable[[int], Awaitable[float]]) -> list[float]:
    """Closed loop: ``concurrency`` executions in flight, the next starts when one ends."""
    gate = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> float:
        async with gate:
            return await one(i)

    return list(await asyncio.gather(*(guarded(i) for i in range(n))))


async def run_b(client: Client, spec: dict[str, Any], n: int, concurrency: int) -> Batch:
    steps = [{"agent": a, "task": t, "context": c} for a, t, c in task_requests(spec)]

    ids: list[str] = []

    async def one(i: int) -> float:
        started = time.perf_counter()
        ids.append(f"bench-bare-{uuid.uuid4()}")
        await client.execute_workflow(
            BARE_CREW_WORKFLOW, args=[steps, {"topic": f"b-{i}"}], id=ids[-1], task_queue=BARE_QUEUE
        )
        return time.perf_counter() - started

    started = time.perf_counter()
    latencies = await _bounded(n, concurrency, one)
    return Batch(latencies, time.perf_counter() - started, ids)


async def run_c(api_url: str, crew_id: str, n: int, concurrency: int) -> Batch:
    """Latency: from sending the POST to the finished_at crewrun records (its own clock, the same
    wall clock as ours), so the poll interval does not count. One poller (a list of the crew's
    executions every 100 ms) for all executions keeps the API's polling load small; it is part of
    the API's CPU in the diagnosis."""
    done: dict[str, asyncio.Future[float]] = {}
    workflow_ids: list[str] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as api:
        stop = asyncio.Event()

        async def poller() -> None:
            while not stop.is_set():
                listed = (
                    await api.get("/api/v1/executions", params={"crew_id": crew_id, "limit": 200})
                ).json()
                for e in listed["items"]:
                    fut = done.get(e["id"])
                    if fut is not None and not fut.done() and e["status"] in TERMINAL:
                        if e["status"] != "completed":
                            fut.set_exception(RuntimeError(f"execution {e['id']} ended {e['status']}"))
                        else:
                            fut.set_result(datetime.fromisoformat(e["finished_at"]).timestamp())
                await asyncio.sleep(0.1)

        async def one(i: int) -> float:
            sent = time.time()
            r = await api.post("/api/v1/executions", json={"crew_id": crew_id, "inputs": {"topic": f"c-{i}"}})
            r.raise_for_status()
            workflow_ids.append(r.json()["workflow_id"])
            fut = done.setdefault(r.json()["id"], asyncio.get_running_loop().create_future())
            return await asyncio.wait_for(fut, 120) - sent

        polling = asyncio.create_task(poller())
        first = time.time()
        try:
            latencies = await _bounded(n, concurrency, one)
        finally:
            stop.set()
            await polling
        finished = max(f.result() for f in done.values())
    return Batch(latencies, finished - first, workflow_ids)


async def history_of(client: Client, workflow_id: str) -> dict[str, int]:
    """Events and activities in one execution's Temporal history: each activity is a round trip
    through the server (schedule, start, complete) and a workflow task after it."""
    counts: dict[str, int] = {"history events": 0}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        counts["history events"] += 1
        attributes = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = f"activity {attributes.activity_type.name}"
            counts[name] = counts.get(name, 0) + 1
        if event.HasField("workflow_task_completed_event_attributes"):
            counts["workflow tasks"] = counts.get("workflow tasks", 0) + 1
    return counts


def register_crew(api_url: str, spec: dict[str, Any]) -> str:
    r = httpx.post(f"{api_url}/api/v1/crews", json=spec, timeout=30)
    r.raise_for_status()
    return str(r.json()["id"])


async def measure(
    stack: Stack, work: Path, *, executions: int, concurrency: int, reps: int
) -> OverheadResult:
    sim = stack.simulator_url
    httpx.post(f"{sim}/_sim/heal").raise_for_status()
    spec = research_spec(sim, f"bench-overhead-{uuid.uuid4().hex[:6]}")
    crew_id = register_crew(stack.api_url, spec)
    address = f"127.0.0.1:{stack.settings.temporal_port}"
    client = await connect(address)
    result = OverheadResult(executions, concurrency, reps)
    with python_child(["-m", "bench.bare_worker", address, BARE_QUEUE], work / "bare-worker.log") as bare:
        runners: dict[str, Callable[[], Awaitable[Batch]]] = {
            "a": lambda: asyncio.to_thread(run_a, spec, executions, concurrency),
            "b": lambda: run_b(client, spec, executions, concurrency),
            # A fresh crew per batch: the poller lists only this batch's executions, so its load on
            # the API stays small and the same in every repetition (not growing with earlier ones).
            "c": lambda: run_c(
                stack.api_url,
                register_crew(stack.api_url, spec | {"name": f"{spec['name']}-{uuid.uuid4().hex[:6]}"}),
                executions,
                concurrency,
            ),
        }
        # Warm-up, not measured: CrewAI's first import and call, worker caches, SQLite pages.
        progress("overhead: warm-up of (a), (b), (c)")
        for variant in VARIANTS:
            await _warm(variant, spec, client, stack.api_url, crew_id, concurrency)
        for rep, variant in interleaved(reps, VARIANTS):
            batch = await runners[variant]()
            result.p50_ms[variant].add(ms(p50(batch.latencies_s)))
            result.p99_ms[variant].add(ms(p99(batch.latencies_s)))
            result.per_s[variant].add(batch.throughput)
            progress(
                f"overhead rep {rep + 1}/{reps} {NAMES[variant]}: p50 {ms(p50(batch.latencies_s)):.0f} ms, "
                f"{batch.throughput:.2f} executions/s"
            )
        progress("overhead: profiling one more batch of (b) and (c) with py-spy and /proc CPU accounting")
        processes = {
            "temporal server": stack.child("temporal").process.pid,
            "simulator": stack.child("simulator").process.pid,
            "bench client": os.getpid(),
        }
        profiled = {
            "b": (runners["b"], {"bare worker": bare.pid}),
            "c": (
                runners["c"],
                {
                    "crewrun worker": stack.child("worker").process.pid,
                    "crewrun API": stack.child("api").process.pid,
                },
            ),
        }
        for variant, (run, spied) in profiled.items():
            pids = processes | spied
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            with sampled(spied, work) as outputs:
                batch = await run()
            result.history[variant] = await history_of(client, batch.workflow_ids[-1])
            result.cpu_per_execution[variant] = {
                name: (cpu_seconds(pid) - before[name]) / executions for name, pid in pids.items()
            }
            result.profiles |= outputs
    httpx.delete(f"{sim}/_sim/requests")
    return result


async def _warm(
    variant: str, spec: dict[str, Any], client: Client, api_url: str, crew_id: str, c: int
) -> None:
    if variant == "a":
        await asyncio.to_thread(run_a, spec, c, c)
    elif variant == "b":
        await run_b(client, spec, c, c)
    else:
        await run_c(api_url, crew_id, c, c)


def markdown(r: OverheadResult) -> str:
    rows = [
        [
            NAMES[v],
            r.p50_ms[v].fmt("{:.0f}", " ms"),
            r.p99_ms[v].fmt("{:.0f}", " ms"),
            r.per_s[v].fmt("{:.2f}"),
        ]
        for v in VARIANTS
    ]
    ratios = [
        [
            "b/a (cost of durability)",
            r.ratio("b", "a").fmt("{:.2f}"),
            r.throughput_ratio("b", "a").fmt("{:.2f}"),
        ],
        [
            "c/b (cost of crewrun's error handling)",
            r.ratio("c", "b").fmt("{:.2f}"),
            r.throughput_ratio("c", "b").fmt("{:.2f}"),
        ],
    ]
    return "\n\n".join(
        [
            f"{r.executions} executions of the 3-task crew per variant and repetition, {r.concurrency} in "
            f"flight (closed loop), {r.reps} repetitions interleaved a,b,c,a,b,c,…",
            table(["variant", "latency p50", "latency p99", "executions/s"], rows),
            table(["ratio (per repetition, then median)", "latency p50", "throughput (inverse)"], ratios),
        ]
    )


def _ssl_note(profiles: dict[str, Path]) -> str:
    """A slow path found by these profiles, outside crewrun's error handling: it is in (a), (b) and
    (c) alike, so it does not move c/b, but it is most of a worker's CPU."""
    shares = {}
    for name, path in profiles.items():
        s = summarise(path)
        ssl = sum(n for k, n in s.by_leaf.items() if k.startswith("create_default_context"))
        if s.total:
            shares[name] = ssl / s.total
    if not any(v > 0.10 for v in shares.values()):
        return ""
    measured = ", ".join(f"{v:.0%} of the {k}'s samples" for k, v in shares.items() if v > 0.10)
    return (
        f"**A slow path common to (a), (b) and (c):** `ssl.create_default_context` takes {measured}. "
        "`CrewTaskRunner.run` builds a new `crewai.LLM` per task, which builds a new OpenAI client and a "
        "new AsyncOpenAI client, each with a fresh SSL context that loads the whole CA bundle, also for a "
        "plain-http endpoint. Caching the LLM (or one shared httpx client) per (model, base_url, key, timeout) "
        "in the runner would remove it; it is the largest single CPU cost of a task against a fast provider."
    )


def markdown_diagnosis(r: OverheadResult) -> str:
    """CPU per execution by process for (b) and (c), and where crewrun's worker and API spend it."""
    names = sorted({n for per in r.cpu_per_execution.values() for n in per})
    rows = [
        [n]
        + [
            f"{r.cpu_per_execution.get(v, {}).get(n, 0) * 1000:.0f} ms"
            if n in r.cpu_per_execution.get(v, {})
            else "–"
            for v in ("b", "c")
        ]
        for n in names
    ]
    rows.append(
        ["**total**"]
        + [f"**{sum(r.cpu_per_execution.get(v, {}).values()) * 1000:.0f} ms**" for v in ("b", "c")]
    )
    parts = [
        "CPU seconds per execution, by process, over one extra batch per variant (same size, py-spy "
        "attached, so slightly inflated; not part of the figures above). On a 2-core machine the "
        "latency at this concurrency follows the CPU.",
        table(["process", "(b) bare workflow", "(c) crewrun"], rows),
    ]
    keys = sorted({k for h in r.history.values() for k in h})
    parts += [
        "Temporal history of one execution of each (the last of the profiled batch):",
        table(
            ["", "(b) bare workflow", "(c) crewrun"],
            [[k] + [str(r.history.get(v, {}).get(k, 0)) for v in ("b", "c")] for k in keys],
        ),
    ]
    for name, path in r.profiles.items():
        parts.append(markdown_profile(f"py-spy, {name}", path))
    parts += [n for n in (_ssl_note(r.profiles),) if n]
    return "\n\n".join(parts)
