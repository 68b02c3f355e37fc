"""Resource exhaustion, simulated for real: a worker of `crewrun up` whose memory (RLIMIT_AS) or
file descriptors (RLIMIT_NOFILE) run out in the middle of a crew, and a backend DB whose disk fills.

The limits are set on the running worker with prlimit(2), the way a container runtime or the OOM
policy of a cgroup would constrain it; the supervisor's fresh worker has the normal limits again.
Expected each time: the attempt fails classified as resource_exhaustion (not internal), the worker
drains and exits for a fresh one, the task is retried under that category's budget, completed
tasks are not re-run, and the ledger is clean.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.db.store import Store
from backend.settings import Settings
from backend.supervisor import read_status
from backend.temporal_client import connect
from tests.ledger import calls_by_logical_call, check_ledger
from tests.postgres import stack_database
from tests.support import (
    crewrun_up,
    healthy,
    research_spec,
    sim_calls,
    stack_settings,
    terminal,
    wait_for,
)

# Its own DB (CREWRUN_TEST_DATABASE decides); one test process runs the module: one stack.
pytestmark = [pytest.mark.e2e, pytest.mark.stack_db]

# Real backoff would make this slow; the budget (4 attempts) is what matters here.
FAST_RESOURCE_RETRY = json.dumps(
    {"resource_exhaustion": {"initial_interval_s": 0.2, "maximum_interval_s": 0.5}}
)


class Stack:
    """One `crewrun up` for the module, with a registered three-task crew."""

    def __init__(self, settings: Settings, up: subprocess.Popen[bytes]) -> None:
        self.settings = settings
        self.up = up
        self.api = f"http://127.0.0.1:{settings.api_port}"
        self.sim = f"http://127.0.0.1:{settings.simulator_port}"
        self.crew_id = self.register("research", timeout_s=60)

    def worker(self) -> dict[str, Any]:
        """The worker as `crewrun status` shows it ({} until the supervisor wrote its status)."""
        status = read_status(self.settings.data_dir) or {"children": []}
        return next((c for c in status["children"] if c["name"] == "worker"), {})

    def idle_worker_pid(self) -> int:
        """The worker's pid once it is up and has run a whole execution (its pools and threads
        exist, so what a limit takes away afterwards is only what the next task needs)."""
        wait_for(
            lambda: self.worker().get("pid") and self.worker()["state"] == "running", 30, "a running worker"
        )
        warm = self.start("warm-up")
        assert (
            wait_for(lambda: terminal(self.api, warm), 60, "the warm-up execution")["status"] == "completed"
        )
        return int(self.worker()["pid"])

    def register(self, name: str, **llm: Any) -> str:
        spec = research_spec(lambda a: f"{self.sim}/agents/{a}/v1", name=name, **llm)
        return str(httpx.post(f"{self.api}/api/v1/crews", json=spec).json()["id"])

    def start(self, topic: str, crew_id: str | None = None) -> str:
        body = {"crew_id": crew_id or self.crew_id, "inputs": {"topic": topic}}
        return str(httpx.post(f"{self.api}/api/v1/executions", json=body).json()["id"])

    def errors(self, execution_id: str) -> list[tuple[str, str, str, int]]:
        items = httpx.get(f"{self.api}/api/v1/executions/{execution_id}/errors").json()["items"]
        return [(e["code"], e["category"], e["task"], e["category_attempt"]) for e in items]

    async def ledger(self, ids: list[str]) -> Any:
        settings = self.settings.model_copy(
            update={"temporal_address": f"127.0.0.1:{self.settings.temporal_port}"}
        )
        store = Store.from_url(settings.database_url)
        calls = httpx.get(f"{self.sim}/_sim/requests").json()["calls"]
        return await check_ledger(
            store,
            await connect(settings),
            ids,
            max_calls_per_logical_call=2,
            calls_per_task=calls_by_logical_call(calls),
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("exhaustion")
    with stack_database(tmp) as url:
        settings = stack_settings(tmp, url)
        log = tmp / "up.log"
        up = crewrun_up(settings, log, CREWRUN_RETRY=FAST_RESOURCE_RETRY)
        try:
            wait_for(lambda: healthy(f"http://127.0.0.1:{settings.api_port}"), 90, f"crewrun up ({log})")
            yield Stack(settings, up)
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(60)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def virtual_size(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


async def test_a_worker_out_of_memory_fails_the_attempt_and_is_replaced(stack: Stack) -> None:
    pid = stack.idle_worker_pid()
    restarts = stack.worker()["restarts"]
    # 300 MB of address space to spare; the analyst's answer is 180 MB, and reading it takes one
    # allocation of that size on top of the 180 MB read so far: that one fails, the rest fits.
    resource.prlimit(pid, resource.RLIMIT_AS, (virtual_size(pid) + 300_000_000, resource.RLIM_INFINITY))
    httpx.post(
        f"{stack.sim}/_sim/faults", json={"kind": "huge", "agent": "analyst", "size_mb": 180}
    ).raise_for_status()

    execution_id = stack.start("out of memory")
    done = wait_for(lambda: terminal(stack.api, execution_id), 90, "the execution to finish")

    assert done["status"] == "completed"
    assert [t["attempts"] for t in done["tasks"]] == [1, 2, 1]
    assert stack.errors(execution_id) == [("RESOURCE_MEMORY", "resource_exhaustion", "analyse", 1)]
    replaced = stack.worker()
    assert replaced["restarts"] == restarts + 1 and replaced["last_exit"] == "exit code 75"
    assert replaced["pid"] != pid
    topic_calls = [c for c in sim_calls(stack.sim, "researcher") if "out of memory" in c["task_hint"]]
    assert len(topic_calls) == 1  # task 1 was not re-run
    report = await stack.ledger([execution_id])
    assert report.problems == [] and report.duplicates == 0, report.problems


async def test_a_worker_out_of_file_descriptors_fails_the_attempt_and_is_replaced(stack: Stack) -> None:
    pid = stack.idle_worker_pid()
    restarts = stack.worker()["restarts"]
    idle = open_fds(pid)
    # A crew whose LLMs this worker has not built yet (another timeout: other cache entries). Task
    # 2's answer comes late; while it is in flight the descriptor limit drops below what the
    # worker has open. Task 3 must build its LLM (an SSL context reads the CA bundle, a new
    # connection takes a socket): EMFILE.
    crew_id = stack.register("fresh-llms", timeout_s=59)
    httpx.post(
        f"{stack.sim}/_sim/faults", json={"kind": "slow", "agent": "analyst", "delay_s": 3}
    ).raise_for_status()
    execution_id = stack.start("out of descriptors", crew_id)
    wait_for(
        lambda: [c for c in sim_calls(stack.sim, "analyst") if "out of descriptors" in c["task_hint"]],
        30,
        "task 2 to call the provider",
    )
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (idle, hard))

    done = wait_for(lambda: terminal(stack.api, execution_id), 90, "the execution to finish")

    assert done["status"] == "completed"
    assert [t["attempts"] for t in done["tasks"]] == [1, 1, 2]
    assert stack.errors(execution_id) == [("RESOURCE_FILE_LIMIT", "resource_exhaustion", "write", 1)]
    replaced = stack.worker()
    assert replaced["restarts"] == restarts + 1 and replaced["last_exit"] == "exit code 75"
    topic_calls = [c for c in sim_calls(stack.sim, "researcher") if "out of descriptors" in c["task_hint"]]
    assert len(topic_calls) == 1  # task 1 was not re-run
    report = await stack.ledger([execution_id])
    assert report.problems == [] and report.duplicates == 0, report.problems
