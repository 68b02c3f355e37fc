"""A crewrun worker process: `python worker.py` (several may run against one stack).

Applies DB migrations, connects to Temporal (waiting for it), and polls the crewrun task queue
until SIGINT/SIGTERM, then finishes in-flight work within the graceful-shutdown window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
from prometheus_client import start_http_server

from backend.db.engine import upgrade_database
from backend.logging_setup import configure_logging
from backend.metrics import Metrics
from backend.settings import Settings, get_settings, with_crews
from backend.temporal_client import connect, runtime_with_metrics
from backend.worker_factory import build_worker
from backend.worker_health import DescriptorWatch

log = structlog.get_logger("crewrun.worker")
# Exit status of a worker that ran out of memory or file descriptors and wants a fresh process
# (EX_TEMPFAIL); its supervisor (crewrun up, systemd, Kubernetes) starts it again.
EXIT_RECYCLE = 75


async def main(settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    upgrade_database(settings.database_url)
    metrics = Metrics()
    if settings.worker_metrics_port:
        try:
            start_http_server(settings.worker_metrics_port, addr="127.0.0.1", registry=metrics.registry)
        except OSError as exc:  # a taken port costs the metrics, not the worker
            log.error("worker.metrics_unavailable", port=settings.worker_metrics_port, error=str(exc))
    client = await connect(settings, runtime=runtime_with_metrics(settings.worker_sdk_metrics_port))
    stop = asyncio.Event()
    recycle: list[str] = []

    def exhausted(code: str) -> None:
        if not recycle:
            log.error(
                "worker.recycling",
                code=code,
                pid=os.getpid(),
                reason="this process ran out of a resource; exiting for a fresh one",
            )
        recycle.append(code)
        stop.set()

    worker = build_worker(client, settings, metrics=metrics, on_exhausted=exhausted)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker.started",
        task_queue=settings.task_queue,
        pid=os.getpid(),
        temporal=settings.temporal_address,
        metrics_port=settings.worker_metrics_port,
        sdk_metrics_port=settings.worker_sdk_metrics_port,
    )
    async with worker:
        watchdog = asyncio.create_task(_watch_descriptors(DescriptorWatch(), exhausted, stop))
        await stop.wait()
        watchdog.cancel()
        log.info("worker.stopping")
    log.info("worker.stopped", recycled=bool(recycle))
    return EXIT_RECYCLE if recycle else 0


async def _watch_descriptors(
    watch: DescriptorWatch, exhausted: Callable[[str], None], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await asyncio.sleep(2.0)
        if watch.exhausted():
            exhausted("RESOURCE_FILE_LIMIT")


def _command_line() -> Settings:
    """``python worker.py [--crew NAME=MODULE:ATTR ...] [--crew-path DIR ...]``"""
    parser = argparse.ArgumentParser(description="A crewrun worker.")
    parser.add_argument("--crew", action="append", default=[], help="NAME=MODULE:ATTR (repeatable)")
    parser.add_argument("--crew-path", action="append", default=[], type=Path, help="folder to import from")
    args = parser.parse_args()
    try:
        return with_crews(get_settings(), args.crew, [p.resolve() for p in args.crew_path])
    except ValueError as exc:
        parser.error(str(exc))
        raise


if __name__ == "__main__":
    status = asyncio.run(main(_command_line()))
    # The Temporal core runtime can abort at interpreter exit after all work is done
    # (sdk-python#300); the work is over, so leave without running finalizers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
