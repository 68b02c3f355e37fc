"""Builds a crewrun worker: the workflow, the crew activities and their dependencies.

``worker.py`` runs one as a process; tests build one in-process against the same real parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.alert_activities import AlertActivities
from activities.attempt_records import JournalConfig
from activities.call_journal import JournalLimits
from activities.crew_activities import CrewActivities
from activities.runner_contract import TaskRunner
from activities.webhook_activities import WebhookActivities
from backend.alerts import Alerter, sinks_from
from backend.breaker import CircuitBreaker, config_from
from backend.db.store import CrewNameTaken, Store
from backend.metrics import Metrics
from backend.pricing import PriceTable
from backend.secret_box import SecretBox
from backend.settings import Settings
from workflows.alert_delivery import AlertDeliveryWorkflow
from workflows.crew_execution import CrewExecutionWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

log = structlog.get_logger(__name__)


def build_store(settings: Settings) -> Store:
    return Store.from_url(settings.database_url)


def default_runner(settings: Settings) -> TaskRunner:
    """The CrewAI runner with the Python crews and the tool registry this worker's settings name."""
    from activities.crew_runner import CrewTaskRunner, ToolRegistry  # imports crewai: only where tasks run
    from activities.python_crews import CrewRegistry

    crews = CrewRegistry.load(settings.crews, settings.tools, settings.crew_paths)
    return CrewTaskRunner(crews=crews, tools=ToolRegistry.load(settings.tools))


def journal_config(settings: Settings) -> JournalConfig | None:
    if not settings.journal_enabled:
        return None
    return JournalConfig(
        replay=settings.journal_replay,
        limits=JournalLimits(settings.journal_max_call_bytes, settings.journal_max_execution_bytes),
        prices=PriceTable(settings.prices),
    )


def register(store: Store, runner: TaskRunner) -> None:
    """What this worker carries, for the API: each Python crew's manifest and the tools of its
    registry. A crew whose name a JSON crew took is logged and left unregistered."""
    crews = getattr(runner, "crews", None)
    for name, loaded in (getattr(crews, "crews", None) or {}).items():
        try:
            crew = store.register_python_crew(name, loaded.spec.model_dump(mode="json"))
        except CrewNameTaken:
            log.error("crew.name_taken", crew=name, reason="a JSON crew of this name exists")
            continue
        log.info("crew.registered", crew=name, version=crew.version, code_version=loaded.spec.code_version)
    registry = getattr(runner, "tools", None)
    described = registry.described() if registry is not None else []
    if described:
        store.register_tools(described)


class CrewrunWorker:
    """A Temporal worker and what it owns. Leaving ``async with`` shuts the worker down (running
    activities get the graceful-shutdown window), then stops the thread pool CrewAI runs in and
    closes the provider clients the runner cached."""

    def __init__(self, worker: Worker, executor: ThreadPoolExecutor, runner: TaskRunner) -> None:
        self.worker = worker
        self._executor = executor
        self.runner = runner

    async def __aenter__(self) -> Worker:
        await self.worker.__aenter__()
        return self.worker

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self.worker.__aexit__(*exc_info)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            close = getattr(self.runner, "close", None)
            if callable(close):
                await asyncio.to_thread(close)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    store: Store | None = None,
    runner: TaskRunner | None = None,
    breaker: CircuitBreaker | None = None,
    metrics: Metrics | None = None,
    task_queue: str | None = None,
    on_exhausted: Callable[[str], None] | None = None,
) -> CrewrunWorker:
    """The worker, ready for ``async with`` (which runs it and, on the way out, releases the
    CrewAI thread pool and the runner's provider clients)."""
    # CrewAI blocks: its calls run in this pool, sized like the activity slots, so a slow
    # provider never stalls the event loop that serves workflow tasks and queries.
    executor = ThreadPoolExecutor(settings.worker_max_concurrent_tasks, thread_name_prefix="crew-task")
    store = store or build_store(settings)
    metrics = metrics or Metrics()
    alerter = Alerter(store.db, list(settings.alert_rules), sinks_from(settings))
    activities_runner = runner or default_runner(settings)
    register(store, activities_runner)
    activities = CrewActivities(
        store=store,
        runner=activities_runner,
        executor=executor,
        breaker=breaker or CircuitBreaker(store.db, config_from(settings)),
        metrics=metrics,
        alerter=alerter,
        alert_max_interval_s=settings.alert_delivery_max_interval_s,
        on_exhausted=on_exhausted,
        outputs_dir=settings.data_dir / "outputs",
        journal=journal_config(settings),
    )
    alert_activities = AlertActivities(alerter, metrics)
    webhook_box = SecretBox.for_deployment(settings.webhook_key, settings.data_dir)
    webhook_activities = WebhookActivities(store, webhook_box, settings.webhook_timeout_s)
    worker = Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[CrewExecutionWorkflow, AlertDeliveryWorkflow, WebhookDeliveryWorkflow],
        activities=[
            activities.run_crew_task,
            activities.record_execution_status,
            activities.compensate_execution,
            activities.skip_task,
            activities.record_feedback,
            alert_activities.deliver_alert,
            webhook_activities.deliver_webhooks,
        ],
        max_concurrent_activities=settings.worker_max_concurrent_tasks + 4,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.worker_sticky_timeout_s),
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_s),
    )
    return CrewrunWorker(worker, executor, activities_runner)
