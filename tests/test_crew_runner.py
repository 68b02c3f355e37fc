"""CrewTaskRunner against the simulator: the LLMs it shares between tasks, and what an LLM it
lets go leaves behind."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from activities.crew_runner import CrewTaskRunner, LLMCache
from activities.runner_contract import TaskRunRequest
from backend.specs import CrewSpec
from tests.support import SimulatorServer, research_spec


def request_for(sim: SimulatorServer, agent: int, topic: str = "otters") -> TaskRunRequest:
    spec = CrewSpec.model_validate(research_spec(sim.base_url))
    return TaskRunRequest(
        agent=spec.agents[agent], task=spec.tasks[agent], inputs={"topic": topic}, context={}
    )


async def test_tasks_with_the_same_llm_settings_share_one_llm(sim: SimulatorServer) -> None:
    llms = LLMCache()
    runner = CrewTaskRunner(llms)
    built: list[Any] = []
    original = llms.get

    def spy(key: Any) -> Any:
        llm = original(key)
        built.append(llm)
        return llm

    llms.get = spy  # type: ignore[method-assign]
    for topic in ("otters", "beavers", "voles"):
        outcome = await asyncio.to_thread(runner.run, request_for(sim, 0, topic))
        assert outcome.output
    assert len(sim.calls()) == 3
    assert len({id(llm) for llm in built}) == 1  # one LLM, so one pair of SDK clients, for all three
    other = await asyncio.to_thread(runner.run, request_for(sim, 1))  # another base URL: its own LLM
    assert other.output and id(built[-1]) != id(built[0])
    await asyncio.to_thread(runner.close)  # closing takes an event loop of its own: not on this one


async def test_an_evicted_llm_leaves_no_client_that_schedules_its_close_on_the_collecting_loop(
    sim: SimulatorServer,
) -> None:
    # Workflow activations run event loops of their own; a provider client collected there must not
    # put a task into that loop (openai's and anthropic's async clients do, unless closed).
    runner = CrewTaskRunner(LLMCache(size=1))
    gc.collect()
    await asyncio.to_thread(runner.run, request_for(sim, 0))  # a thread, as in the activity
    await asyncio.to_thread(runner.run, request_for(sim, 1))  # evicts the first LLM, closing its clients
    assert len(sim.calls()) == 2

    before = asyncio.all_tasks()
    gc.collect()  # here a loop is running, as in a workflow activation
    assert asyncio.all_tasks() - before == set()
    await asyncio.to_thread(runner.close)
    gc.collect()
    assert asyncio.all_tasks() - before == set()
