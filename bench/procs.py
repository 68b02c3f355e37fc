"""Child processes of the benchmark: embedded stacks and bare Temporal dev servers.

Every process started here is stopped in a ``finally`` (context managers), also when a benchmark
fails half way, so a failed `make bench` leaves no dev server or worker behind on the shared
machine. Ports are always free ones picked by the OS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from backend.ports import free_port
from backend.settings import SEARCH_ATTRIBUTES, Settings
from backend.stack import Stack, temporal_binary

_T0 = time.monotonic()


def progress(message: str) -> None:
    """One line per step with the elapsed time: the whole run must stay under 20 minutes."""
    elapsed = time.monotonic() - _T0
    print(f"[bench {int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {message}", flush=True)


def wait_for_port(port: int, timeout_s: float = 60, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before opening port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout_s}s")


def stack_settings(data_dir: Path, database_url: str | None = None, *, heartbeat_s: int = 30) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=data_dir,
        database_url=database_url or f"sqlite:///{data_dir / 'crewrun.db'}",
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
        api_port=free_port(),
        simulator_port=free_port(),
        task_heartbeat_timeout_s=heartbeat_s,
        worker_metrics_port=free_port(),
        worker_sdk_metrics_port=free_port(),
    )


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Stack children inherit os.environ when spawned; settings not in Settings' own env mapping
    (breaker, retry) reach them this way. Restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def running_stack(settings: Settings, **env: str) -> Iterator[Stack]:
    """The real embedded stack (`crewrun up` minus the demo): Temporal dev server on a SQLite file
    with WAL, the simulator, one worker process, the API process. ``env`` reaches the children
    started now and only those: it is restored before the block runs, so a worker spawned later
    for another stack does not inherit it."""
    stack = Stack(settings)
    try:
        with environment(**env):
            stack.start(timeout_s=120)
        yield stack
    finally:
        stack.stop()


def dev_server_command(port: int, db_file: Path | None, pragmas: bool) -> list[str]:
    """``temporal server start-dev`` as crewrun runs it (see backend.stack.temporal_command), with the
    persistence switched: in memory (no --db-filename), SQLite file, SQLite file + WAL/NORMAL."""
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--headless",
        "--log-level",
        "error",
    ]
    if db_file is not None:
        cmd += ["--db-filename", str(db_file)]
        if pragmas:
            cmd += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    for name in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{name}=Keyword"]
    return cmd


@contextlib.contextmanager
def dev_server(db_file: Path | None, pragmas: bool, log_path: Path) -> Iterator[str]:
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            dev_server_command(port, db_file, pragmas),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, 60, process)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process)


@contextlib.contextmanager
def python_child(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | (env or {}),
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def connect(address: str, timeout_s: float = 60) -> Any:
    """A Temporal client, waiting for a dev server whose frontend is still coming up."""
    from temporalio.client import Client

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
