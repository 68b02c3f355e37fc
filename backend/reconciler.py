"""Starts executions the API accepted but could not hand to Temporal (the API died or Temporal
was down between the DB insert and the workflow start). Safe to run anywhere, any number of
times: the workflow id is the execution's business key and a second start finds the first run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from backend.db.models import utcnow
from backend.db.store import Store
from backend.executions import start_webhook_delivery, start_workflow
from backend.settings import Settings
from workflows.contracts import ALERT_WORKFLOW_NAME

log = structlog.get_logger("crewrun.reconciler")


async def start_orphans(client: Client, settings: Settings, store: Store, *, older_than_s: float) -> int:
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    orphans = await asyncio.to_thread(store.unstarted_executions, before=cutoff, limit=100)
    for execution in orphans:
        handle = await start_workflow(client, settings, store, execution)
        log.info("reconciler.started", execution_id=execution.id, run_id=handle.result_run_id)
    return len(orphans)


async def redeliver_alerts(client: Client, settings: Settings, store: Store, *, older_than_s: float) -> int:
    """Undelivered alerts whose delivery workflow never started (or gave up after a day) get one.
    The workflow id is the alert's, so a delivery already under way is left alone."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    pending = await asyncio.to_thread(store.undelivered_alerts, before=cutoff, limit=100)
    for alert_id in pending:
        await client.start_workflow(
            ALERT_WORKFLOW_NAME,
            args=[alert_id, settings.alert_delivery_max_interval_s],
            id=f"alert-{alert_id}",
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    return len(pending)


async def prune_journal(settings: Settings, store: Store) -> int:
    """Journal rows of executions finished longer ago than the retention; their totals stay."""
    cutoff = utcnow() - timedelta(days=settings.journal_retention_days)
    pruned = await asyncio.to_thread(store.prune_journal, cutoff)
    if pruned:
        log.info("reconciler.journal_pruned", rows=pruned)
    return pruned


async def resume_webhooks(client: Client, settings: Settings, store: Store, *, older_than_s: float) -> int:
    """Executions with events waiting since before the cutoff get their delivery (again): one that
    never started (Temporal was down when the API accepted the execution) or one that ended."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    waiting = await asyncio.to_thread(store.executions_with_waiting_webhooks, before=cutoff, limit=100)
    for execution_id in waiting:
        await start_webhook_delivery(client, settings, execution_id)
    return len(waiting)
