"""The benchmark crew: the three-task research crew of the tests, every agent on the simulator, and
variant (a) of the overhead benchmark, which runs it in-process with crewrun's own task runner."""

from __future__ import annotations

from typing import Any

from backend.specs import AgentSpec, CrewSpec, TaskSpec


def research_spec(sim_url: str, name: str, **llm: Any) -> dict[str, Any]:
    """Same shape as tests/support.py research_spec (copied: bench must not depend on tests/, which
    other people edit): three agents, each on its own simulator path, the last task with context."""
    agents = ["researcher", "analyst", "writer"]
    return {
        "name": name,
        "agents": [
            {
                "name": a,
                "role": a.capitalize(),
                "goal": f"Do the {a} part about {{topic}}",
                "backstory": f"A seasoned {a}.",
                "llm": {
                    "model": "gpt-4o-mini",
                    "base_url": f"{sim_url}/agents/{a}/v1",
                    "timeout_s": 10,
                    **llm,
                },
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


def task_requests(spec: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], list[str]]]:
    """(agent spec, task spec, names of the tasks whose outputs it sees), in order, resolved with
    the same CrewSpec code crewrun's workflow uses."""
    parsed = CrewSpec.model_validate(spec)
    out = []
    for task in parsed.tasks:
        agent = parsed.agent(task.agent)
        out.append((agent.model_dump(mode="json"), task.model_dump(mode="json"), parsed.context_of(task)))
    return out


def run_in_process(spec: dict[str, Any], inputs: dict[str, Any]) -> dict[str, str]:
    """Variant (a): no Temporal, no DB; the tasks in order with CrewTaskRunner, as one crew
    kickoff would run them."""
    from activities.crew_runner import CrewTaskRunner  # imports crewai: only where needed
    from activities.runner_contract import StoredOutput, TaskRunRequest

    runner = CrewTaskRunner()
    outputs: dict[str, str] = {}
    for agent, task, context in task_requests(spec):
        request = TaskRunRequest(
            agent=AgentSpec.model_validate(agent),
            task=TaskSpec.model_validate(task),
            inputs=inputs,
            context={name: StoredOutput(outputs[name]) for name in context},
        )
        outputs[task["name"]] = runner.run(request).output
    return outputs
