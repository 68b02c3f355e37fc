"""A crewrun worker process: `python worker.py` (several may run against one stack).

Applies DB migrations, connects to Temporal (waiting for it), and polls the crewrun task queue
until SIGINT/SIGTERM, then finishes in-flight work within the graceful-shutdown window.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog
from prometheus_client import start_http_server

from backend.db.engine import upgrade_database
from backend.logging_setup import configure_logging
from backend.metrics import Metrics
from backend.settings import get_settings
from backend.temporal_client import connect, runtime_with_metrics
from backend.worker_factory import build_worker

log = structlog.get_logger("crewrun.worker")


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    upgrade_database(settings.database_url)
    metrics = Metrics()
    if settings.worker_metrics_port:
        try:
            start_http_server(settings.worker_metrics_port, addr="127.0.0.1", registry=metrics.registry)
        except OSError as exc:  # a taken port costs the metrics, not the worker
            log.error("worker.metrics_unavailable", port=settings.worker_metrics_port, error=str(exc))
    client = await connect(settings, runtime=runtime_with_metrics(settings.worker_sdk_metrics_port))
    worker, executor = build_worker(client, settings, metrics=metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker.started", task_queue=settings.task_queue, pid=os.getpid(), temporal=settings.temporal_address,
        metrics_port=settings.worker_metrics_port, sdk_metrics_port=settings.worker_sdk_metrics_port,
    )  # fmt: skip
    async with worker:
        await stop.wait()
        log.info("worker.stopping")
    executor.shutdown(wait=False, cancel_futures=True)
    log.info("worker.stopped")


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal core runtime can abort at interpreter exit after all work is done
    # (sdk-python#300); the work is over, so leave without running finalizers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
