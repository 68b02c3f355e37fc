"""Worker process of variant (b): `python -m bench.bare_worker <address> <task queue> [--trivial]`.

``--trivial`` serves only the trivial workflow (persistence benchmark) and skips importing CrewAI.

A separate process like crewrun's own worker, with the same task pool size, so (b) and (c) differ
only in what crewrun adds around each task, not in process layout or thread count."""

from __future__ import annotations

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio import activity
from temporalio.worker import Worker

from backend.settings import Settings
from backend.specs import AgentSpec, TaskSpec
from bench.bare_workflow import BARE_TASK_ACTIVITY, TRIVIAL_ACTIVITY, BareCrewWorkflow, TrivialWorkflow
from bench.procs import connect


def crew_task_activity(pool: ThreadPoolExecutor) -> Any:
    from activities.crew_runner import CrewTaskRunner
    from activities.runner_contract import StoredOutput, TaskRunRequest

    runner = CrewTaskRunner()

    @activity.defn(name=BARE_TASK_ACTIVITY)
    async def run_crew_task(
        agent: dict[str, Any], task: dict[str, Any], inputs: dict[str, Any], context: dict[str, str]
    ) -> str:
        request = TaskRunRequest(
            agent=AgentSpec.model_validate(agent),
            task=TaskSpec.model_validate(task),
            inputs=inputs,
            context={name: StoredOutput(output) for name, output in context.items()},
        )
        # CrewAI is synchronous: a thread of the pool, as crewrun's activity does it.
        outcome = await asyncio.get_running_loop().run_in_executor(pool, runner.run, request)
        return outcome.output

    return run_crew_task


@activity.defn(name=TRIVIAL_ACTIVITY)
async def noop(i: int) -> int:
    return i


async def main(address: str, task_queue: str, trivial: bool) -> None:
    slots = Settings().worker_max_concurrent_tasks  # crewrun's default task pool size
    pool = ThreadPoolExecutor(slots)
    client = await connect(address)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    activities = [noop] if trivial else [noop, crew_task_activity(pool)]
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareCrewWorkflow, TrivialWorkflow],
        activities=activities,
        max_concurrent_activities=slots,
    )
    async with worker:
        print("bare worker polling", flush=True)
        await stop.wait()
    pool.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--trivial" in sys.argv[3:]))
