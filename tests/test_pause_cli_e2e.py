"""Pause and resume with the real Temporal CLI against the embedded stack's processes: the
execution pauses on a 401, `temporal workflow list` finds it by search attribute, and
`temporal workflow signal --name resume` continues it once the provider accepts the key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from backend.stack import Stack
from tests.support import research_spec, sim_calls, stack_settings, terminal, tool_path, wait_for

pytestmark = pytest.mark.e2e


def temporal(stack: Stack, *args: str) -> str:
    command = [tool_path("temporal"), *args, "--address", f"127.0.0.1:{stack.settings.temporal_port}"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def test_paused_execution_is_found_by_the_cli_and_resumed_by_its_signal(tmp_path: Path, db_url: str) -> None:
    stack = Stack(stack_settings(tmp_path, db_url))
    stack.start()
    try:
        sim, api = stack.simulator_url, stack.api_url
        httpx.post(
            f"{sim}/_sim/faults", json={"kind": "auth", "agent": "analyst", "count": None}
        ).raise_for_status()
        spec = research_spec(lambda a: f"{sim}/agents/{a}/v1", name="cli-pause")
        execution = httpx.post(
            f"{api}/api/v1/executions", json={"crew": spec, "inputs": {"topic": "x"}}
        ).json()

        def listed() -> list[dict[str, str]]:
            out = temporal(
                stack, "workflow", "list", "--query", 'CrewExecutionStatus="paused"', "--output", "json"
            )
            return [
                w for w in json.loads(out or "[]") if w["execution"]["workflowId"] == execution["workflow_id"]
            ]

        found = wait_for(listed, 60, "the paused execution in `temporal workflow list`")
        assert len(found) == 1
        assert httpx.get(f"{api}/api/v1/executions/{execution['id']}").json()["status"] == "paused"

        httpx.post(f"{sim}/_sim/heal").raise_for_status()
        temporal(
            stack,
            "workflow",
            "signal",
            "--workflow-id",
            execution["workflow_id"],
            "--name",
            "resume",
            "--input",
            "{}",
        )
        done = wait_for(lambda: terminal(api, execution["id"]), 60, "the resumed execution to finish")
        assert done["status"] == "completed"
        assert len(sim_calls(sim, "researcher")) == 1  # task 1 was called once in total
        assert len(sim_calls(sim, "analyst")) == 2
    finally:
        stack.stop()
