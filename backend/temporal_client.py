"""Connecting to Temporal: one client per process, with a patient first connection."""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError

from backend.settings import Settings


async def connect(
    settings: Settings, *, attempts: int = 60, delay_s: float = 0.5, runtime: Runtime | None = None
) -> Client:
    """Connect, waiting for a server that is still starting (the embedded stack starts in parallel)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await Client.connect(
                settings.temporal_address, namespace=settings.temporal_namespace, runtime=runtime
            )
        except (RuntimeError, RPCError, OSError) as exc:
            last = exc
            await asyncio.sleep(delay_s)
    raise RuntimeError(f"Temporal at {settings.temporal_address} unreachable: {last}")


def runtime_with_metrics(port: int) -> Runtime | None:
    """A Temporal runtime exporting the SDK's own metrics (workflow/activity task latencies,
    poller counts, ...) on ``port``; None keeps the default runtime (no export)."""
    if not port:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))
