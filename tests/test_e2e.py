"""End to end with real processes: the dev server, worker, API and simulator as separate processes
(the embedded stack), a worker killed with SIGKILL mid-task, and `crewrun up` stopped and started."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.demo import with_demo_crews
from backend.ports import port_is_free
from backend.stack import PortInUse, Stack
from tests.postgres import stack_database
from tests.support import crewrun_up, healthy, research_spec, sim_calls, stack_settings, terminal, wait_for

# One test process runs the whole module (conftest.SHARED_SCOPE_MODULES): its tests share one stack.
pytestmark = [pytest.mark.e2e, pytest.mark.stack_db]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module's tests (each talks to simulator paths of its own). Its breaker
    cools down in 3 s instead of 30: the demo's breaker scenario waits for one cooldown."""
    tmp = tmp_path_factory.mktemp("e2e")
    with stack_database(tmp) as url, pytest.MonkeyPatch.context() as env:
        env.setenv("CREWRUN_BREAKER_COOLDOWN_S", "3")  # the children inherit it
        settings, demo_environment = with_demo_crews(stack_settings(tmp, url))
        for name, value in demo_environment.items():
            env.setenv(name, value)
        s = Stack(settings)
        s.start()
        yield s
        s.stop()


def test_worker_killed_mid_task_resumes_without_rerunning_finished_tasks(stack: Stack) -> None:
    sim, api = stack.simulator_url, stack.api_url
    httpx.post(
        f"{sim}/_sim/faults", json={"kind": "slow", "agent": "analyst", "delay_s": 30}
    ).raise_for_status()
    spec = research_spec(lambda a: f"{sim}/agents/{a}/v1", timeout_s=60)
    started = httpx.post(f"{api}/api/v1/executions", json={"crew": spec, "inputs": {"topic": "tides"}})
    assert started.status_code == 202
    execution_id = started.json()["id"]

    wait_for(lambda: sim_calls(sim, "analyst"), what="task 2 to call the provider")
    victim = stack.child("worker").process
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    stack._spawn("worker-2", [sys.executable, "-m", "worker"])

    done = wait_for(lambda: terminal(api, execution_id), what="the execution to finish")
    assert done["status"] == "completed"
    assert len(sim_calls(sim, "researcher")) == 1  # task 1 never ran again
    assert len(sim_calls(sim, "analyst")) == 2  # the killed attempt and the one that finished
    assert len(sim_calls(sim, "writer")) == 1
    assert [t["attempts"] for t in done["tasks"]] == [1, 2, 1]


def test_port_in_use_is_reported_clearly(tmp_path: Path, db_url: str) -> None:
    settings = stack_settings(tmp_path, db_url)
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.api_port))
        holder.listen()
        with pytest.raises(PortInUse, match=f"API port {settings.api_port}"):
            Stack(settings).start()


def test_restarting_the_whole_stack_mid_execution_loses_nothing(tmp_path: Path, db_url: str) -> None:
    settings = stack_settings(tmp_path, db_url)
    api = f"http://127.0.0.1:{settings.api_port}"
    sim = f"http://127.0.0.1:{settings.simulator_port}"
    log = tmp_path / "up.log"
    up = crewrun_up(settings, log)
    try:
        wait_for(lambda: healthy(api), what=f"crewrun up ({log})")
        httpx.post(
            f"{sim}/_sim/faults", json={"kind": "slow", "agent": "analyst", "delay_s": 30}
        ).raise_for_status()
        spec = research_spec(lambda a: f"{sim}/agents/{a}/v1", timeout_s=60)
        execution_id = httpx.post(
            f"{api}/api/v1/executions", json={"crew": spec, "inputs": {"topic": "restarts"}}
        ).json()["id"]
        wait_for(lambda: sim_calls(sim, "analyst"), what="task 2 to start")
        assert len(sim_calls(sim, "researcher")) == 1

        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        ports = (
            settings.temporal_port,
            settings.temporal_ui_port,
            settings.api_port,
            settings.simulator_port,
        )
        wait_for(lambda: all(port_is_free("127.0.0.1", p) for p in ports), 15, "every child to stop")

        up = crewrun_up(settings, log)  # same data dir: same Temporal history, same DB
        wait_for(lambda: healthy(api), what="crewrun up, again")
        done = wait_for(lambda: terminal(api, execution_id), what="the execution to finish after restart")
        assert done["status"] == "completed"
        assert sim_calls(sim, "researcher") == []  # the fresh simulator never saw task 1 again
        assert len(sim_calls(sim, "writer")) == 1
        assert done["tasks"][0]["attempts"] == 1
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(30)


def test_the_demo_shows_every_mechanism_ending_as_designed(stack: Stack) -> None:
    from backend.demo import run_demo

    lines: list[str] = []
    ok = run_demo(
        stack.api_url,
        stack.simulator_url,
        temporal_address=f"127.0.0.1:{stack.settings.temporal_port}",
        echo=lines.append,
    )
    labels = {
        "rate limits",
        "paused on 401",
        "dead-lettered",
        "degraded",
        "circuit breaker",
        "python crew + tool",
        "human review",
    }
    table = {line[:18].strip(): line for line in lines if line[:18].strip() in labels}
    assert ok is True, "\n".join(lines)
    assert len(table) == 7 and all(line[19:30].strip() == "yes" for line in table.values()), table
    assert "completed, attempts 3/2/1/1" in table["rate limits"]
    assert "paused on LLM_AUTH_FAILED, resumed with the printed signal, completed" in table["paused on 401"]
    assert (
        "failed (LLM_CONTENT_REFUSED), dead letter replayed: completed, reused research+analyse"
        in table["dead-lettered"]
    )
    assert "degraded, gaps analyse" in table["degraded"]
    assert "breaker opened, then closed; completed" in table["circuit breaker"]
    assert "completed, tool calls 429/200, summary structured" in table["python crew + tool"]
    assert "approved with the printed curl, completed" in table["human review"]
    commands = [line.strip()[2:] for line in lines if line.strip().startswith("$ ")]
    assert any(
        " workflow signal --workflow-id crew-execution-" in c and "--name resume" in c for c in commands
    )
    assert any(c.startswith("curl -s -X POST ") and "/replay" in c for c in commands)
    assert lines[-1] == "every scenario ended as designed"
