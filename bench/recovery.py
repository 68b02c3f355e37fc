"""Section 3, recovery on the real embedded stack:

- resume: an execution paused on a 401 (operator-fixable) gets `POST .../resume`; measured from
  sending the POST to the simulator recording the failed task's next provider call;
- worker SIGKILL: the worker running a task (stuck in a slow provider call) is killed; measured
  from the kill to the task's next provider call, made by a standby worker that was already
  polling. Bounded below by the heartbeat timeout: Temporal only notices a dead worker when its
  heartbeats stop arriving.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from backend.stack import Child, Stack
from bench.crew import research_spec
from bench.overhead import register_crew
from bench.procs import progress
from bench.stats import Figure, ms, p50, p99, table

TERMINAL = ("completed", "degraded", "failed", "cancelled")


@dataclass
class RecoveryResult:
    reps: int
    pauses_per_rep: int
    heartbeat_timeout_s: float
    resume_p50_ms: Figure = field(default_factory=Figure)
    resume_p99_ms: Figure = field(default_factory=Figure)
    kill_s: Figure = field(default_factory=Figure)


def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out waiting for {what}")


def calls_for(sim: str, agent: str, topic: str) -> list[dict[str, Any]]:
    """The simulator's log of an agent's calls for one execution (the topic is in the task hint)."""
    calls = httpx.get(f"{sim}/_sim/requests", params={"agent": agent}, timeout=10).json()["calls"]
    return [c for c in calls if topic in c["task_hint"]]


def status(api: str, execution_id: str) -> str:
    return str(httpx.get(f"{api}/api/v1/executions/{execution_id}", timeout=10).json()["status"])


def start(api: str, crew_id: str, topic: str) -> str:
    r = httpx.post(
        f"{api}/api/v1/executions", json={"crew_id": crew_id, "inputs": {"topic": topic}}, timeout=30
    )
    r.raise_for_status()
    return str(r.json()["id"])


def resume_latencies(stack: Stack, crew_id: str, n: int, rep: int) -> list[float]:
    sim, api = stack.simulator_url, stack.api_url
    httpx.post(
        f"{sim}/_sim/faults", json={"kind": "auth", "agent": "analyst", "count": None}
    ).raise_for_status()
    topics = [f"resume-{rep}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    ids = [start(api, crew_id, t) for t in topics]
    for eid in ids:
        wait_for(lambda eid=eid: status(api, eid) == "paused", 60, "the execution to pause")
    httpx.post(f"{sim}/_sim/heal").raise_for_status()  # the operator fixed the key
    latencies = []
    for eid, topic in zip(ids, topics, strict=True):
        sent = time.time()
        httpx.post(f"{api}/api/v1/executions/{eid}/resume", json={}, timeout=30).raise_for_status()
        call = wait_for(
            lambda topic=topic: [c for c in calls_for(sim, "analyst", topic) if c["outcome"] == "ok"],
            60,
            "the resumed task's provider call",
        )[0]
        latencies.append(call["at"] - sent)
    for eid in ids:
        wait_for(lambda eid=eid: status(api, eid) in TERMINAL, 60, "the resumed execution to finish", 0.2)
    return latencies


def _spawn_standby(stack: Stack, name: str) -> Child:
    # Metrics ports off: the worker being replaced still holds the configured ones.
    child = stack._spawn(
        name,
        [sys.executable, "-m", "worker"],
        {"CREWRUN_WORKER_METRICS_PORT": "0", "CREWRUN_WORKER_SDK_METRICS_PORT": "0"},
    )
    wait_for(lambda: b"worker.started" in child.log_path.read_bytes(), 120, f"{name} to start", 0.2)
    time.sleep(1.0)  # its pollers reach the server just after the log line
    return child


def kill_recovery(stack: Stack, crew_id: str, victim: Child, rep: int) -> tuple[float, Child]:
    """Returns the seconds from SIGKILL to the task's next provider call, and the new worker."""
    sim, api = stack.simulator_url, stack.api_url
    topic = f"kill-{rep}-{uuid.uuid4().hex[:6]}"
    httpx.post(
        f"{sim}/_sim/faults", json={"kind": "slow", "agent": "analyst", "delay_s": 120}
    ).raise_for_status()
    execution_id = start(api, crew_id, topic)
    wait_for(lambda: calls_for(sim, "analyst", topic), 60, "the task to call the provider")
    standby = _spawn_standby(stack, f"worker-standby-{rep}")
    killed_at = time.time()
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    again = wait_for(lambda: calls_for(sim, "analyst", topic)[1:], 120, "the task to run again", 0.02)[0]
    wait_for(lambda: status(api, execution_id) in TERMINAL, 60, "the execution to finish", 0.2)
    if status(api, execution_id) != "completed":
        raise RuntimeError(f"execution {execution_id} did not complete after the worker was killed")
    return again["at"] - killed_at, standby


def measure(stack: Stack, *, reps: int, pauses_per_rep: int) -> RecoveryResult:
    sim = stack.simulator_url
    httpx.post(f"{sim}/_sim/heal").raise_for_status()
    crew_id = register_crew(stack.api_url, research_spec(sim, f"bench-recovery-{uuid.uuid4().hex[:6]}"))
    result = RecoveryResult(reps, pauses_per_rep, stack.settings.task_heartbeat_timeout_s)
    worker = stack.child("worker")
    for rep in range(reps):  # resume, kill, resume, kill, …
        latencies = resume_latencies(stack, crew_id, pauses_per_rep, rep)
        result.resume_p50_ms.add(ms(p50(latencies)))
        result.resume_p99_ms.add(ms(p99(latencies)))
        progress(f"recovery rep {rep + 1}/{reps}: resume → task restarted p50 {ms(p50(latencies)):.0f} ms")
        seconds, worker = kill_recovery(stack, crew_id, worker, rep)
        result.kill_s.add(seconds)
        progress(f"recovery rep {rep + 1}/{reps}: worker SIGKILL → task running again in {seconds:.1f} s")
    httpx.delete(f"{sim}/_sim/requests")
    return result


def markdown(r: RecoveryResult) -> str:
    hb = r.heartbeat_timeout_s
    ratio = Figure([v / hb for v in r.kill_s.values])
    rows = [
        ["resume signal → failed task restarted, p50", r.resume_p50_ms.fmt("{:.0f}", " ms")],
        ["resume signal → failed task restarted, p99", r.resume_p99_ms.fmt("{:.0f}", " ms")],
        ["worker SIGKILL → task running again", r.kill_s.fmt("{:.1f}", " s")],
        [f"… divided by the heartbeat timeout ({hb:g} s)", ratio.fmt("{:.2f}")],
    ]
    return "\n\n".join(
        [
            f"{r.reps} repetitions, resume and kill interleaved. Resume: {r.pauses_per_rep} executions paused "
            "on a 401 of the second task per repetition, resumed one after another; p50/p99 over each "
            "repetition's resumes. Kill: one execution whose second task hangs in a slow provider call; a "
            "standby worker is already polling when the running worker gets SIGKILL; the stack's heartbeat "
            f"timeout is {hb:g} s (crewrun's default is 30 s; shorter here to keep the run short).",
            table(["what", "median (min–max) over repetitions"], rows),
        ]
    )
