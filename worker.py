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

from backend.db.engine import upgrade_database
from backend.logging_setup import configure_logging
from backend.settings import get_settings
from backend.temporal_client import connect
from backend.worker_factory import build_worker

log = structlog.get_logger("crewrun.worker")


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    upgrade_database(settings.database_url)
    client = await connect(settings)
    worker, executor = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker.started", task_queue=settings.task_queue, pid=os.getpid(), temporal=settings.temporal_address
    )
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
