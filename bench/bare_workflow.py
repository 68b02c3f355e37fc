"""Variant (b) of the overhead benchmark and the persistence benchmark's workload: minimal
workflows. Sandbox-safe: only temporalio and the standard library are imported here; the
activities that import CrewAI live in bench/bare_worker.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

BARE_CREW_WORKFLOW = "BenchBareCrew"
BARE_TASK_ACTIVITY = "bench_run_crew_task"
TRIVIAL_WORKFLOW = "BenchTrivial"
TRIVIAL_ACTIVITY = "bench_noop"


@workflow.defn(name=BARE_CREW_WORKFLOW)
class BareCrewWorkflow:
    """The crew's tasks in order as plain activities: no classification, no DB, no breaker, no
    status records, Temporal's default retry policy, no heartbeat timeout."""

    @workflow.run
    async def run(self, steps: list[dict[str, Any]], inputs: dict[str, Any]) -> dict[str, str]:
        outputs: dict[str, str] = {}
        for step in steps:
            context = {name: outputs[name] for name in step["context"]}
            outputs[step["task"]["name"]] = await workflow.execute_activity(
                BARE_TASK_ACTIVITY,
                args=[step["agent"], step["task"], inputs, context],
                start_to_close_timeout=timedelta(seconds=120),
                result_type=str,
            )
        return outputs


@workflow.defn(name=TRIVIAL_WORKFLOW)
class TrivialWorkflow:
    """N activities that do nothing: what is left is Temporal's own persistence and dispatch."""

    @workflow.run
    async def run(self, activities: int) -> int:
        for i in range(activities):
            await workflow.execute_activity(
                TRIVIAL_ACTIVITY, i, start_to_close_timeout=timedelta(seconds=30), result_type=int
            )
        return activities
