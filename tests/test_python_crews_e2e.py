"""Python crews on `crewrun up`, real processes throughout: the project `crewai create crew`
generates, unchanged, runs to completed through the API with one provider call per task; a
structured output survives `kill -9` of the worker between tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.supervisor import read_status
from tests.crews.crews import Finding
from tests.support import REPO, crewrun_up, healthy, sim_calls, stack_settings, terminal, tool_path, wait_for

pytestmark = pytest.mark.e2e


def crewai_create_crew(parent: Path, name: str) -> Path:
    """CrewAI's own CLI, as a user runs it (no network, no prompts)."""
    home = parent / "home"
    home.mkdir()
    env = dict(os.environ) | {
        "HOME": str(home),
        "CREWAI_DISABLE_TELEMETRY": "true",
        "OTEL_SDK_DISABLED": "true",
    }
    command = [tool_path("crewai"), "create", "crew", name, "--classic", "--skip-provider"]
    subprocess.run(command, cwd=parent, env=env, check=True, capture_output=True, timeout=120)
    return parent / name


def worker_of(data_dir: Path) -> dict[str, Any] | None:
    status = read_status(data_dir)
    return next((c for c in status["children"] if c["name"] == "worker"), None) if status else None


def test_crewais_template_project_and_a_structured_crew_run_on_crewrun_up(
    tmp_path: Path, db_url: str
) -> None:
    project = crewai_create_crew(tmp_path, "demo_crew")
    generated = (project / "src/demo_crew/crew.py").read_text()
    settings = stack_settings(tmp_path, db_url)
    api, sim = f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{settings.simulator_port}"
    log = tmp_path / "up.log"
    # Only environment variables point the template's default LLM at the simulator.
    llm_env = {"MODEL": "gpt-4o-mini", "OPENAI_BASE_URL": f"{sim}/v1", "OPENAI_API_KEY": "sk-template-test"}
    up = crewrun_up(
        settings,
        log,
        "--crew",
        "demo=demo_crew.crew:DemoCrew",
        "--crew-path",
        str(project / "src"),
        "--crew",
        "structured=tests.crews.crews:structured_crew",
        "--crew-path",
        str(REPO),
        CREWRUN_TEST_SIM_URL=sim,
        CREWRUN_TOOLS=json.dumps({"lookup": {"ref": "tests.crews.tools:LookupTool"}}),
        **llm_env,
    )
    try:
        wait_for(lambda: healthy(api) and worker_of(settings.data_dir), 90, f"crewrun up ({log})")
        crews = wait_for(
            lambda: {c["name"]: c for c in httpx.get(f"{api}/api/v1/crews").json()["items"]} or None,
            60,
            "the worker to register its crews",
        )
        assert crews["demo"]["source"] == "python" and crews["demo"]["inputs"] == ["current_year", "topic"]

        inputs = {"topic": "AI LLMs", "current_year": "2026"}
        started = httpx.post(f"{api}/api/v1/executions", json={"crew_name": "demo", "inputs": inputs})
        assert started.status_code == 202, started.text
        done = wait_for(lambda: terminal(api, started.json()["id"]), 90, "the template crew to finish")
        assert done["status"] == "completed", done
        calls = httpx.get(f"{sim}/_sim/requests", params={"kind": "llm"}).json()["calls"]
        assert len(calls) == 2  # one provider call per task: no retry layer under Temporal
        report = settings.data_dir / "outputs" / done["id"] / "report.md"
        assert report.read_text() == done["tasks"][1]["output"]  # output_file, under the execution
        assert done["tasks"][1]["output_file"] == "report.md"
        assert not (REPO / "report.md").exists()  # never the worker's working directory
        assert (project / "src/demo_crew/crew.py").read_text() == generated

        # A structured first task, then the worker dies in the second one.
        httpx.post(
            f"{sim}/_sim/faults", json={"kind": "slow", "agent": "writer", "delay_s": 30}
        ).raise_for_status()
        started = httpx.post(
            f"{api}/api/v1/executions", json={"crew_name": "structured", "inputs": {"topic": "eels"}}
        )
        assert started.status_code == 202, started.text
        wait_for(lambda: sim_calls(sim, "writer"), 60, "task 2 to call the provider")
        victim = worker_of(settings.data_dir)
        assert victim is not None
        os.kill(victim["pid"], signal.SIGKILL)
        done = wait_for(lambda: terminal(api, started.json()["id"]), 120, "the structured crew to finish")

        assert done["status"] == "completed", done
        assert [t["attempts"] for t in done["tasks"]] == [1, 2]
        assert len(sim_calls(sim, "finder")) == 1  # task 1 never ran again
        finding = Finding.model_validate(done["tasks"][0]["json_dict"])
        assert "eels" in finding.topic
        # The attempt after the crash read task 1's output back from the checkpoint.
        assert finding.topic in sim_calls(sim, "writer")[-1]["prompt"]
        assert done["result"]["tasks_output"][0]["json_dict"] == finding.model_dump()

        # 4 LLM calls and 3 tool calls; the worker dies during the last LLM call: the next one
        # is served the first six from the journal and makes the last one again.
        llm = {"model": "gpt-4o-mini", "base_url": f"{sim}/agents/looker/v1"}
        looker = {
            "name": "looker",
            "role": "Looker",
            "goal": "Look {topic} up",
            "tools": ["lookup"],
            "llm": llm,
        }
        task = {
            "name": "look",
            "description": "Look up {topic}",
            "expected_output": "Facts",
            "agent": "looker",
        }
        crew = {"name": "looker", "agents": [looker], "tasks": [task]}
        httpx.post(f"{sim}/_sim/agents/looker", json={"tool_rounds": 3}).raise_for_status()
        slow_last = {"kind": "slow", "agent": "looker", "after": 3, "delay_s": 30}
        httpx.post(f"{sim}/_sim/faults", json=slow_last).raise_for_status()
        started = httpx.post(f"{api}/api/v1/executions", json={"crew": crew, "inputs": {"topic": "rays"}})
        assert started.status_code == 202, started.text
        wait_for(lambda: len(sim_calls(sim, "looker")) == 4, 60, "the fourth LLM call")
        victim = worker_of(settings.data_dir)
        assert victim is not None
        os.kill(victim["pid"], signal.SIGKILL)
        done = wait_for(lambda: terminal(api, started.json()["id"]), 120, "the looker to finish")

        assert done["status"] == "completed", done
        assert len(sim_calls(sim, "looker")) == 5  # 4 + the one the crash interrupted, again
        tools = httpx.get(f"{sim}/_sim/requests", params={"tool": "lookup"}).json()["calls"]
        assert len(tools) == 3
        steps = httpx.get(f"{api}/api/v1/executions/{done['id']}/steps").json()["items"]
        assert [s["outcome"] for s in steps if s["attempt"] == 2] == ["replayed"] * 6 + ["ok"]
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
