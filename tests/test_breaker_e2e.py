"""The shared circuit breaker with two real worker processes against one stack, during a real
provider outage (the simulator answers 503 to everything), and the same outage without a breaker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.breaker import CircuitBreaker, config_from
from backend.db.database import Database
from backend.settings import Settings
from backend.stack import Stack
from tests.support import free_port, research_spec, terminal, wait_for

pytestmark = pytest.mark.e2e
THRESHOLD = 3
EXECUTIONS = 4


def _settings(tmp_path: Path, db_url: str, name: str) -> Settings:
    return Settings(
        data_dir=tmp_path / name,
        database_url=db_url,
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
        api_port=free_port(),
        simulator_port=free_port(),
        task_heartbeat_timeout_s=5,
        worker_metrics_port=free_port(),
        worker_sdk_metrics_port=free_port(),
    )


def _spec(sim: str, name: str) -> dict[str, Any]:
    spec = research_spec(lambda a: f"{sim}/agents/{a}/v1", name=name, service="sim-llm")
    return spec


def _start_executions(stack: Stack, name: str) -> list[str]:
    ids = []
    for i in range(EXECUTIONS):
        r = httpx.post(
            f"{stack.api_url}/api/v1/executions",
            json={"crew": _spec(stack.simulator_url, f"{name}-{i}"), "inputs": {"topic": str(i)}},
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
        time.sleep(0.3)  # calls arrive one after another, as they would in a steady flow
    return ids


def _calls(stack: Stack) -> list[dict[str, Any]]:
    return httpx.get(f"{stack.simulator_url}/_sim/requests").json()["calls"]  # type: ignore[no-any-return]


def _run_outage(stack: Stack, name: str, until: Any) -> tuple[int, float]:
    """Outage on; executions in; wait for ``until``; count the calls; outage off; all complete.
    Returns the calls made during the outage and its length from the first call."""
    httpx.post(f"{stack.simulator_url}/_sim/outage", json={"duration_s": 600}).raise_for_status()
    ids = _start_executions(stack, name)
    first = wait_for(lambda: _calls(stack), 60, "the first provider call")[0]["at"]
    wait_for(lambda: until(first), 60, "the outage scenario")
    calls = _calls(stack)
    during, lasted = len(calls), time.time() - first
    httpx.post(f"{stack.simulator_url}/_sim/heal").raise_for_status()
    for execution_id in ids:
        done = wait_for(lambda eid=execution_id: terminal(stack.api_url, eid), 90, "executions to finish")
        assert done["status"] == "completed", done
    return during, lasted


def test_shared_breaker_parks_executions_during_an_outage_and_saves_calls(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWRUN_BREAKER_CONSECUTIVE_FAILURES", str(THRESHOLD))
    monkeypatch.setenv("CREWRUN_BREAKER_MIN_CALLS", "100")  # only the consecutive trip in play
    monkeypatch.setenv("CREWRUN_BREAKER_COOLDOWN_S", "2")
    settings = _settings(tmp_path, db_url, "with")
    breaker = CircuitBreaker(Database.from_url(db_url), config_from(settings))

    def probes() -> int:
        return sum(1 for e in breaker.events("sim-llm") if e.to_state == "half_open")

    stack = Stack(settings, workers=2)
    stack.start()
    try:
        during, lasted = _run_outage(stack, "with", until=lambda _first: probes() >= 3)
        transitions = [(e.from_state, e.to_state) for e in breaker.events("sim-llm")]
        probes_during = probes() - 1  # the last probe is the one that found the provider back
        logs = {c.name: c.log_path.read_text() for c in stack.children if c.name.startswith("worker")}
    finally:
        stack.stop()

    # Opened once by the threshold, then probe after probe failed until the outage ended.
    assert transitions[0] == ("closed", "open")
    assert transitions[-2:] == [("open", "half_open"), ("half_open", "closed")]
    assert transitions.count(("closed", "open")) == 1
    # The calls that opened it, those already in flight from the other executions (they start
    # 0.3 s apart, but a loaded machine can bunch them), one per failed probe, and the last probe.
    assert THRESHOLD <= during <= THRESHOLD + (EXECUTIONS - 1) + probes_during + 1, (during, transitions)
    # Both worker processes parked executions on the shared breaker.
    assert len(logs) == 2 and all('"code": "CIRCUIT_OPEN"' in text for text in logs.values()), list(logs)

    monkeypatch.setenv("CREWRUN_BREAKER_ENABLED", "false")
    unguarded = Stack(_settings(tmp_path, db_url, "without"), workers=1)  # one is enough to call too often
    unguarded.start()
    try:  # the same outage, as long as the guarded one lasted from its first call
        without, _ = _run_outage(unguarded, "without", until=lambda first: time.time() - first >= lasted)
    finally:
        unguarded.stop()
    print(f"\nprovider calls during a {lasted:.1f} s outage: with the breaker {during}, without {without}")
    assert without > during
