"""The demo: submits the example research crew a few times, once with transient provider faults,
waits for every execution and prints a table of outcomes with Web UI links.

Exit status 0 only if every execution completed, so ``make demo`` doubles as a smoke test.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from backend.crewai_project import import_project

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "research_crew"
TOPICS = ("tidal energy", "urban beekeeping", "solid-state batteries")
TERMINAL = {"completed", "degraded", "failed", "cancelled"}


def demo_spec(simulator_url: str, name: str) -> dict[str, Any]:
    spec, _ = import_project(EXAMPLE, name=name, llm={"model": "gpt-4o-mini", "timeout_s": 10})
    body = spec.model_dump(mode="json")
    for agent in body["agents"]:
        # One simulator path per agent, so faults can be scripted per agent.
        agent["llm"]["base_url"] = f"{simulator_url}/agents/{agent['name']}/v1"
        agent["llm"]["service"] = "simulator"
    return body


def _wait(api: httpx.Client, execution_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = api.get(f"/api/v1/executions/{execution_id}").json()
        if body["status"] in TERMINAL or time.monotonic() > deadline:
            return body
        time.sleep(0.25)


def run_demo(api_url: str, simulator_url: str, *, timeout_s: float = 120, echo: Any = print) -> bool:
    name = f"research-demo-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=api_url, timeout=30) as api, httpx.Client(base_url=simulator_url) as sim:
        crew = api.post("/api/v1/crews", json=demo_spec(simulator_url, name))
        crew.raise_for_status()
        crew_id = crew.json()["id"]
        echo(f"registered crew {name} ({crew_id}) with {len(crew.json()['spec']['tasks'])} tasks")

        runs: list[tuple[str, str, float]] = []
        # First, alone: the provider rate-limits the researcher twice and fails the analyst once.
        sim.post(
            "/_sim/faults",
            json={
                "rules": [
                    {"kind": "rate_limit", "agent": "researcher", "count": 2, "retry_after_s": 1},
                    {"kind": "server_error", "agent": "analyst", "count": 1, "status": 503},
                ]
            },
        ).raise_for_status()
        t0 = time.monotonic()
        faulty = api.post(
            "/api/v1/executions",
            json={"crew_id": crew_id, "inputs": {"topic": "deep-sea mining"}},
            headers={"Idempotency-Key": f"{name}-faulty"},
        )
        faulty.raise_for_status()
        results = [("transient faults", _wait(api, faulty.json()["id"], timeout_s), time.monotonic() - t0)]
        # Then a few healthy ones side by side.
        t0 = time.monotonic()
        for topic in TOPICS:
            r = api.post("/api/v1/executions", json={"crew_id": crew_id, "inputs": {"topic": topic}})
            r.raise_for_status()
            runs.append((topic, r.json()["id"], t0))
        for topic, execution_id, started in runs:
            results.append((topic, _wait(api, execution_id, timeout_s), time.monotonic() - started))

    echo("")
    echo(f"{'execution':38} {'scenario':20} {'status':10} {'attempts':12} {'secs':>5}  Web UI")
    ok = True
    for label, body, secs in results:
        attempts = "/".join(str(t["attempts"]) for t in body["tasks"])
        echo(
            f"{body['id']:38} {label[:20]:20} {body['status']:10} {attempts:12} {secs:5.1f}  {body['temporal_ui_url']}"
        )
        ok = ok and body["status"] == "completed"
    echo("")
    echo("all executions completed" if ok else "NOT every execution completed")
    return ok
