"""`crewrun up` heals itself: a worker killed with SIGKILL in the middle of task 2 is started again
by the supervisor, the API keeps answering, and the execution completes without re-running task 1.
Real processes throughout (`crewrun up` is a child of the test, its children are its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from backend.ports import free_port, port_is_free
from backend.supervisor import read_status
from tests.support import (
    REPO,
    crewrun_up,
    healthy,
    research_spec,
    sim_calls,
    stack_env,
    stack_settings,
    terminal,
    wait_for,
)

pytestmark = pytest.mark.e2e


def child_of(data_dir: Path, name: str) -> dict[str, Any] | None:
    status = read_status(data_dir)
    return next((c for c in status["children"] if c["name"] == name), None) if status else None


def test_a_worker_killed_under_crewrun_up_is_restarted_and_the_execution_completes(
    tmp_path: Path, db_url: str
) -> None:
    settings = stack_settings(tmp_path, db_url)
    api, sim = f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{settings.simulator_port}"
    log = tmp_path / "up.log"
    up = crewrun_up(settings, log)
    try:
        wait_for(lambda: healthy(api) and child_of(settings.data_dir, "worker"), 90, f"crewrun up ({log})")
        httpx.post(
            f"{sim}/_sim/faults", json={"kind": "slow", "agent": "analyst", "delay_s": 30}
        ).raise_for_status()
        spec = research_spec(lambda a: f"{sim}/agents/{a}/v1", timeout_s=60)
        execution_id = httpx.post(
            f"{api}/api/v1/executions", json={"crew": spec, "inputs": {"topic": "oom"}}
        ).json()["id"]
        wait_for(lambda: sim_calls(sim, "analyst"), 60, "task 2 to call the provider")

        victim = child_of(settings.data_dir, "worker")
        assert victim is not None and victim["restarts"] == 0
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        # While the worker is down, the API answers (it is not taken down with the worker).
        assert httpx.get(f"{api}/api/v1/executions/{execution_id}").status_code == 200
        restarted = wait_for(
            lambda: (c := child_of(settings.data_dir, "worker")) and c["restarts"] == 1 and c["pid"] and c,
            15,
            "the supervisor to start the worker again",
        )
        assert restarted["pid"] != victim["pid"] and restarted["last_exit"] == "killed by SIGKILL"
        assert time.monotonic() - killed_at < 10  # "within a few seconds, nobody typing anything"
        assert healthy(api)

        done = wait_for(lambda: terminal(api, execution_id), 90, "the execution to finish")
        assert done["status"] == "completed"
        assert len(sim_calls(sim, "researcher")) == 1  # task 1 never ran again
        assert len(sim_calls(sim, "analyst")) == 2  # the killed attempt and the one that finished
        assert [t["attempts"] for t in done["tasks"]] == [1, 2, 1]

        shown = subprocess.run(
            [sys.executable, "-m", "backend.cli", "status"],
            cwd=REPO,
            env=stack_env(settings),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        worker_line = next(line for line in shown.stdout.splitlines() if line.startswith("worker "))
        assert worker_line.split()[:3] == ["worker", "running", str(restarted["pid"])]
        assert worker_line.split()[5:] == ["1", "killed", "by", "SIGKILL"]
        assert "restarting it in 1 s" in log.read_text()
    finally:
        up.send_signal(signal.SIGTERM)  # SIGTERM, like Ctrl-C, stops every child
        assert up.wait(60) == 0
    ports = (settings.temporal_port, settings.temporal_ui_port, settings.api_port, settings.simulator_port)
    wait_for(lambda: all(port_is_free("127.0.0.1", p) for p in ports), 15, "every child to stop")
    assert read_status(settings.data_dir) is None


def test_crewrun_up_with_postgres_runs_the_backend_db_on_an_embedded_server(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")
    pg_port = free_port()
    api, sim = f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{settings.simulator_port}"
    log = tmp_path / "up.log"
    up = crewrun_up(settings, log, "--postgres", CREWRUN_EMBEDDED_POSTGRES_PORT=str(pg_port))
    try:
        wait_for(
            lambda: healthy(api) and child_of(settings.data_dir, "postgres"),
            120,
            f"crewrun up --postgres ({log})",
        )
        spec = research_spec(lambda a: f"{sim}/agents/{a}/v1")
        execution_id = httpx.post(
            f"{api}/api/v1/executions", json={"crew": spec, "inputs": {"topic": "pg"}}
        ).json()["id"]
        assert wait_for(lambda: terminal(api, execution_id), 90, "the execution")["status"] == "completed"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/crewrun") as conn:
            row = conn.execute("SELECT status FROM executions WHERE id = %s", (execution_id,)).fetchone()
        assert row == ("completed",)  # the stack's DB is the embedded PostgreSQL, not the SQLite URL
        assert (settings.data_dir / "pg" / "data" / "PG_VERSION").exists()
        assert not (tmp_path / "unused.db").exists()
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    wait_for(lambda: port_is_free("127.0.0.1", pg_port), 15, "PostgreSQL to stop with the stack")
