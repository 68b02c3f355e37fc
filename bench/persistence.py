"""Section 2, Temporal persistence of the embedded default: `temporal server start-dev` in memory,
on a SQLite file with SQLite's defaults, and on a SQLite file with the WAL/NORMAL pragmas crewrun
passes. The workload is a trivial workflow of N no-op activities, so what is measured is the
server's persistence and dispatch, not CrewAI or crewrun."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from bench.bare_workflow import TRIVIAL_WORKFLOW
from bench.procs import connect, dev_server, progress, python_child
from bench.stats import Figure, ms, p50, p99, table

MODES = {
    "memory": "in memory",
    "sqlite": "SQLite file, default pragmas",
    "sqlite_wal": "SQLite file, journal_mode=wal + synchronous=normal (crewrun's default)",
}
QUEUE = "bench-trivial"


@dataclass
class PersistenceResult:
    activities: int
    workflows: dict[int, int]
    reps: int
    tasks_per_s: dict[tuple[str, int], Figure] = field(default_factory=dict)
    p50_ms: dict[tuple[str, int], Figure] = field(default_factory=dict)
    p99_ms: dict[tuple[str, int], Figure] = field(default_factory=dict)

    def add(self, mode: str, c: int, tasks_per_s: float, latencies_s: list[float]) -> None:
        self.tasks_per_s.setdefault((mode, c), Figure()).add(tasks_per_s)
        self.p50_ms.setdefault((mode, c), Figure()).add(ms(p50(latencies_s)))
        self.p99_ms.setdefault((mode, c), Figure()).add(ms(p99(latencies_s)))


async def batch(
    client: Client, workflows: int, concurrency: int, activities: int
) -> tuple[float, list[float]]:
    """Closed loop with ``concurrency`` workflows in flight. Returns (activities/s, latencies)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with gate:
            started = time.perf_counter()
            await client.execute_workflow(
                TRIVIAL_WORKFLOW, activities, id=f"bench-trivial-{uuid.uuid4()}", task_queue=QUEUE
            )
            return time.perf_counter() - started

    started = time.perf_counter()
    latencies = list(await asyncio.gather(*(one() for _ in range(workflows))))
    return workflows * activities / (time.perf_counter() - started), latencies


async def measure(work: Path, *, activities: int, workflows: dict[int, int], reps: int) -> PersistenceResult:
    result = PersistenceResult(activities, workflows, reps)
    with contextlib.ExitStack() as stack:
        clients: dict[str, Client] = {}
        # All three servers (each with its own worker process) run side by side; while one is
        # measured the others are idle, and interleaving spreads any disturbance evenly.
        for mode in MODES:
            db = None if mode == "memory" else work / f"temporal-{mode}.db"
            address = stack.enter_context(dev_server(db, mode == "sqlite_wal", work / f"temporal-{mode}.log"))
            stack.enter_context(
                python_child(
                    ["-m", "bench.bare_worker", address, QUEUE, "--trivial"],
                    work / f"trivial-worker-{mode}.log",
                )
            )
            clients[mode] = await connect(address)
        progress("persistence: three dev servers up, warming up")
        for client in clients.values():
            await batch(client, 10, 10, activities)
        for rep in range(reps):
            for c, n in workflows.items():
                for mode, client in clients.items():
                    per_s, latencies = await batch(client, n, c, activities)
                    result.add(mode, c, per_s, latencies)
                    progress(
                        f"persistence rep {rep + 1}/{reps} {mode} c={c}: {per_s:.0f} activities/s, "
                        f"p50 {ms(p50(latencies)):.0f} ms"
                    )
    return result


def markdown(r: PersistenceResult) -> str:
    rows = []
    for c in r.workflows:
        for mode, label in MODES.items():
            key = (mode, c)
            rows.append(
                [
                    label,
                    str(c),
                    r.tasks_per_s[key].fmt("{:.0f}"),
                    r.p50_ms[key].fmt("{:.0f}", " ms"),
                    r.p99_ms[key].fmt("{:.0f}", " ms"),
                ]
            )
    speedup = []
    for c in r.workflows:
        wal, plain, mem = (r.tasks_per_s[(m, c)] for m in ("sqlite_wal", "sqlite", "memory"))
        speedup.append(
            [
                str(c),
                Figure([w / p for w, p in zip(wal.values, plain.values, strict=False)]).fmt("{:.2f}"),
                Figure([w / m for w, m in zip(wal.values, mem.values, strict=False)]).fmt("{:.2f}"),
            ]
        )
    sizes = ", ".join(f"{n} workflows at concurrency {c}" for c, n in r.workflows.items())
    return "\n\n".join(
        [
            f"Trivial workflow of {r.activities} no-op activities; {sizes}; one worker process per server "
            f"(the bare worker, `--trivial`); {r.reps} repetitions, modes interleaved within each concurrency. "
            "Tasks/s counts activities completed per second of wall time; latency is one workflow, start to "
            "result, seen by the client. At concurrency 1 a workflow waits on one round trip at a time "
            "(schedule, poll, complete, next workflow task), so persistence matters least there; the modes "
            "compare best at 10 and 50, where writes queue up.",
            table(["persistence", "concurrency", "activities/s", "latency p50", "latency p99"], rows),
            table(["concurrency", "WAL vs default SQLite (activities/s)", "WAL vs in memory"], speedup),
        ]
    )
