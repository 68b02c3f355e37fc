"""Section 4, fault handling on the real embedded stack, counted from the simulator's own request
log (GET /_sim/requests), never from crewrun's view of itself:

- retry amplification: the provider fails one way forever; provider calls per logical call
  (one task of one execution) divided by the budget of that category (the ``max_attempts`` the
  error events report, which is retry_policy.DEFAULT_POLICIES'). Exactly 1.0 means every budgeted
  attempt is made and no layer under Temporal adds hidden retries. The crew's spec shortens the
  backoff (the budget stays) so the run is short; the breaker is off on that stack so it cannot
  park the calls.
- outage: every call gets 503 while executions keep arriving; provider calls in a fixed window
  with the circuit breaker (stack A) and without it (stack B, CREWRUN_BREAKER_ENABLED=false),
  both with the default retry table.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from backend.stack import Stack
from bench.crew import research_spec
from bench.overhead import register_crew
from bench.procs import progress
from bench.recovery import TERMINAL, start, wait_for
from bench.stats import Figure, table

# fault rule for the researcher (the first task) → the category it must be classified as
AMPLIFICATION_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "503 Service Unavailable": ({"kind": "server_error", "status": 503}, "external_service"),
    # The simulator sends retry-after-ms: 100 and retry-after: 1 (whole seconds); crewrun waits for
    # the longest header, so each retry waits about 1 s.
    "429 (retry-after-ms 100, retry-after 1 s)": ({"kind": "rate_limit", "retry_after_s": 0.1}, "rate_limit"),
    "connection reset": ({"kind": "reset"}, "network"),
    "malformed 200 body": ({"kind": "malformed"}, "llm_output"),
}
FAST = {"initial_interval_s": 0.05, "maximum_interval_s": 0.2}
SERVICE = "sim-llm"


@dataclass
class FaultResult:
    reps: int
    executions_per_case: int
    outage_executions: int
    outage_window_s: float
    arrival_gap_s: float
    cooldown_s: float
    amplification: dict[str, Figure] = field(default_factory=dict)
    observed: dict[str, set[str]] = field(default_factory=dict)  # case -> codes/budgets seen
    with_breaker: Figure = field(default_factory=Figure)
    without_breaker: Figure = field(default_factory=Figure)

    @property
    def breaker_share(self) -> Figure:
        return Figure(
            [
                w / wo
                for w, wo in zip(self.with_breaker.values, self.without_breaker.values, strict=False)
                if wo
            ]
        )


def sim_calls(stack: Stack) -> list[dict[str, Any]]:
    return list(httpx.get(f"{stack.simulator_url}/_sim/requests", timeout=10).json()["calls"])


def finished(api: str, execution_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = httpx.get(f"{api}/api/v1/executions/{execution_id}", timeout=10).json()
    return body if body["status"] in TERMINAL else None


def amplification_once(stack: Stack, case: str, n: int, rep: int, result: FaultResult) -> float:
    sim, api = stack.simulator_url, stack.api_url
    rule, category = AMPLIFICATION_CASES[case]
    httpx.post(f"{sim}/_sim/heal").raise_for_status()
    httpx.post(f"{sim}/_sim/faults", json={**rule, "agent": "researcher", "count": None}).raise_for_status()
    spec = research_spec(sim, f"bench-amp-{uuid.uuid4().hex[:8]}")
    spec["retry"] = {category: FAST}  # shorter waits, same budget
    crew_id = register_crew(api, spec)
    topics = [f"amp-{rep}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    ids = [start(api, crew_id, t) for t in topics]
    for eid in ids:
        wait_for(lambda eid=eid: finished(api, eid), 180, f"{case}: the execution to fail", 0.2)
    httpx.post(f"{sim}/_sim/heal").raise_for_status()
    calls = [c for c in sim_calls(stack) if c["agent"] == "researcher"]
    ratios = []
    for eid, topic in zip(ids, topics, strict=True):
        events = httpx.get(f"{api}/api/v1/executions/{eid}/errors", params={"limit": 100}, timeout=10).json()[
            "items"
        ]
        budget = max(e["max_attempts"] for e in events)
        result.observed.setdefault(case, set()).update(
            f"{e['code']} ({e['category']}, budget {e['max_attempts']})" for e in events
        )
        if any(e["category"] != category for e in events):
            raise RuntimeError(
                f"{case}: classified as {[e['category'] for e in events]}, expected {category}"
            )
        made = sum(1 for c in calls if topic in c["task_hint"])
        ratios.append(made / budget)  # one logical call (the first task) per execution
    return sum(ratios) / len(ratios)


def outage_once(stack: Stack, r: FaultResult) -> int:
    """Provider calls within ``outage_window_s`` of the first call, executions arriving every
    ``arrival_gap_s``; then the outage ends, leftovers are cancelled and the breaker reset, so
    repetitions start from the same state."""
    sim, api = stack.simulator_url, stack.api_url
    httpx.delete(f"{sim}/_sim/requests").raise_for_status()
    httpx.post(f"{sim}/_sim/outage", json={"duration_s": 600}).raise_for_status()
    crew_id = register_crew(api, research_spec(sim, f"bench-outage-{uuid.uuid4().hex[:8]}", service=SERVICE))
    ids = []
    t0 = time.monotonic()
    for i in range(r.outage_executions):
        time.sleep(max(0.0, t0 + i * r.arrival_gap_s - time.monotonic()))
        ids.append(start(api, crew_id, f"outage-{i}-{uuid.uuid4().hex[:6]}"))
    first = wait_for(lambda: sim_calls(stack), 60, "the first provider call")[0]["at"]
    time.sleep(max(0.0, first + r.outage_window_s - time.time()))
    during = sum(1 for c in sim_calls(stack) if c["at"] <= first + r.outage_window_s)
    httpx.post(f"{sim}/_sim/heal").raise_for_status()
    with httpx.Client(base_url=api, timeout=30) as client:
        for eid in ids:
            client.post(f"/api/v1/executions/{eid}/cancel")  # 409 if it already ended: fine
        for eid in ids:
            wait_for(lambda eid=eid: finished(api, eid), 120, "the outage executions to end", 0.2)
        client.post(f"/api/v1/circuit-breakers/{SERVICE}/reset")  # 404 without a breaker: fine
    return during


def measure(guarded: Stack, unguarded: Stack, r: FaultResult) -> FaultResult:
    for rep in range(r.reps):
        for case in AMPLIFICATION_CASES:
            ratio = amplification_once(unguarded, case, r.executions_per_case, rep, r)
            r.amplification.setdefault(case, Figure()).add(ratio)
            progress(f"faults rep {rep + 1}/{r.reps} amplification {case}: {ratio:.2f}")
    for rep in range(r.reps):  # with, without, with, without, …
        r.with_breaker.add(outage_once(guarded, r))
        r.without_breaker.add(outage_once(unguarded, r))
        progress(
            f"faults rep {rep + 1}/{r.reps} outage: {r.with_breaker.values[-1]:.0f} provider calls with "
            f"the breaker, {r.without_breaker.values[-1]:.0f} without"
        )
    return r


def markdown(r: FaultResult) -> str:
    amp_rows = [
        [case, "; ".join(sorted(r.observed.get(case, ()))), fig.fmt("{:.2f}")]
        for case, fig in r.amplification.items()
    ]
    outage_rows = [
        ["with the circuit breaker", r.with_breaker.fmt("{:.0f}")],
        ["without (CREWRUN_BREAKER_ENABLED=false)", r.without_breaker.fmt("{:.0f}")],
        ["with / without", Figure([v * 100 for v in r.breaker_share.values]).fmt("{:.1f}", " %")],
    ]
    return "\n\n".join(
        [
            "**Retry amplification** (target exactly 1.0). The provider fails the first task forever; "
            f"{r.executions_per_case} executions per case and repetition, {r.reps} repetitions, cases "
            "interleaved; the figure is provider calls per logical call divided by the category budget, "
            "averaged over the executions of a repetition. Breaker off, backoff shortened in the crew spec.",
            table(["provider fault", "classified as (from the error events)", "calls / budget"], amp_rows),
            f"**Outage with and without the breaker** (target ≤ 10 %). Every call answers 503; "
            f"{r.outage_executions} executions of the crew arrive {r.arrival_gap_s:g} s apart; provider calls "
            f"counted in the {r.outage_window_s:g} s after the first one. Breaker settings: crewrun's defaults "
            f"(opens after 5 consecutive failures, or ≥ 50 % of ≥ 10 calls in 60 s) except the cooldown, "
            f"{r.cooldown_s:g} s instead of 30 s to fit the window; retries: the default table "
            "(external_service: 6 attempts, 2 s × 2). Repetitions interleaved with, without, with, …",
            table(["", "provider calls in the window"], outage_rows),
        ]
    )
