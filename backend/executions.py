"""Starting and steering executions: the one path from "accepted" to "running on Temporal".

Used by the API and the CLI alike. The DB row is written first (status pending), then the workflow
is started with id = the execution's business key, so a retried or concurrent start cannot run a
crew twice: Temporal answers the second start with the first run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from backend.db.models import Execution
from backend.db.store import Store
from backend.settings import Settings
from backend.status import TaskStatus
from workflows.contracts import (
    WEBHOOK_WORKFLOW_NAME,
    WORKFLOW_NAME,
    ActivityTuning,
    CrewExecutionInput,
    CrewExecutionResult,
)


def tuning_from(settings: Settings) -> ActivityTuning:
    return ActivityTuning(
        heartbeat_timeout_s=settings.task_heartbeat_timeout_s,
        default_task_timeout_s=settings.task_default_timeout_s,
        retry_overrides=settings.retry_overrides(),
        pause_categories=list(settings.pause_categories),
        pause_timeout_s=settings.pause_timeout_s,
        alert_delivery_max_interval_s=settings.alert_delivery_max_interval_s,
    )


async def start_workflow(
    client: Client, settings: Settings, store: Store, execution: Execution
) -> WorkflowHandle[Any, CrewExecutionResult]:
    """Start (or find) the execution's workflow and record its run id. Safe to call twice."""
    handle: WorkflowHandle[Any, CrewExecutionResult] = await client.start_workflow(
        WORKFLOW_NAME,
        CrewExecutionInput(
            execution_id=execution.id,
            crew_name=execution.crew_name,
            spec=execution.spec,
            inputs=execution.inputs,
            tuning=tuning_from(settings),
            seeded=[t.name for t in execution.tasks if t.status == TaskStatus.COMPLETED],
        ),
        id=execution.workflow_id,
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"crew {execution.crew_name} · execution {execution.id}",
        result_type=CrewExecutionResult,
    )
    run_id = handle.result_run_id or handle.first_execution_run_id or ""
    if run_id:
        await asyncio.to_thread(store.set_run_id, execution.id, run_id)
    return handle


async def start_webhook_delivery(client: Client, settings: Settings, execution_id: str) -> None:
    """The execution's webhook delivery (safe to call again: the running one stays)."""
    await client.start_workflow(
        WEBHOOK_WORKFLOW_NAME,
        args=[execution_id, settings.webhook_retry_max_interval_s],
        id=f"webhooks-{execution_id}",
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"webhooks of execution {execution_id}",
    )
