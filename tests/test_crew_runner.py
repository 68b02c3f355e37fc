"""CrewAITaskRunner against the simulator: what a finished task leaves behind."""

from __future__ import annotations

import asyncio
import gc

from activities.crew_runner import CrewAITaskRunner
from activities.runner_contract import TaskRunRequest
from backend.specs import CrewSpec
from tests.support import SimulatorServer, research_spec


async def test_a_finished_task_leaves_no_client_that_schedules_its_close_on_the_collecting_loop(
    sim: SimulatorServer,
) -> None:
    # Workflow activations run event loops of their own; a provider client collected there must not
    # put a task into that loop (openai's and anthropic's async clients do, unless closed).
    spec = CrewSpec.model_validate(research_spec(sim.base_url)).model_dump(mode="json")
    request = TaskRunRequest(
        agent=spec["agents"][0], task=spec["tasks"][0], inputs={"topic": "otters"}, context={}
    )
    gc.collect()
    outcome = await asyncio.to_thread(CrewAITaskRunner().run, request)  # a thread, as in the activity
    assert outcome.output and len(sim.calls()) == 1

    before = asyncio.all_tasks()
    gc.collect()  # here a loop is running, as in a workflow activation
    assert asyncio.all_tasks() - before == set()
