"""Where the time goes, for the write-up of missed targets: py-spy samples of running processes
(all threads, native frames off) summarised by package and by crewrun function, CPU seconds per
process from /proc, and a per-pattern breakdown of redaction (pyinstrument cannot look inside a
regex; timing each pattern alone can)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.stats import table

_TICK = os.sysconf("SC_CLK_TCK")
PACKAGES = ("sqlalchemy", "temporalio", "crewai", "litellm", "openai", "httpx", "httpcore", "pydantic",
            "structlog", "fastapi", "starlette", "uvicorn", "anyio", "psycopg", "prometheus_client", "instructor",
            "tiktoken", "jinja2", "json", "asyncio", "threading", "concurrent", "logging", "sqlite3", "re")  # fmt: skip
OWN = ("backend/", "activities/", "workflows/", "worker.py", "bench/")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(pids: dict[str, int], out_dir: Path, seconds: int = 600) -> Iterator[dict[str, Path]]:
    """py-spy record on each pid (collapsed stacks) until the block ends: SIGINT makes py-spy stop
    and write what it has. Yields the output paths."""
    tool = py_spy()
    outputs: dict[str, Path] = {}
    procs = []
    if tool:
        for name, pid in pids.items():
            outputs[name] = out_dir / f"py-spy-{name}.txt"
            procs.append(subprocess.Popen([tool, "record", "--pid", str(pid), "--duration", str(seconds), "--rate",
                                           "200", "--format", "raw", "--full-filenames", "--output", str(outputs[name]),
                                           "--nonblocking"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        time.sleep(1.0)  # py-spy attaches
    try:
        yield outputs
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _package(frame: str) -> str:
    # frame: "function (path/to/file.py:123)"
    path = frame.rsplit("(", 1)[-1]
    if any(marker in path for marker in OWN) and "site-packages" not in path:
        return "crewrun"
    for name in PACKAGES:
        if f"/{name}/" in path or f"/{name}.py" in path:
            return name
    return "other"


def _function(frame: str) -> str:
    """``name (…/backend/db/store.py:123)`` → ``Store.x (store.py)``: lines of one function merged."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})"


def summarise(collapsed: Path, top: int = 10) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, samples by package of the innermost frame, samples by the innermost crewrun
    function on the stack: which of crewrun's own functions led to that CPU being spent)."""
    by_package: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    if not collapsed.exists():
        return 0, [], []
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        total += n
        frames = stack.split(";")
        by_package[_package(frames[-1])] += n
        mine = [f for f in frames if _package(f) == "crewrun"]
        own[_function(mine[-1]) if mine else "(no crewrun frame: SDK/runtime threads)"] += n
    return total, by_package.most_common(top), own.most_common(top)


def markdown_profile(title: str, collapsed: Path) -> str:
    total, packages, own = summarise(collapsed)
    if not total:
        return f"{title}: no py-spy samples (py-spy missing or not permitted to attach)."
    pk = table(["innermost frame in", "share of samples"], [[p, f"{n / total:.0%}"] for p, n in packages])
    fn = table(["innermost crewrun function on the stack", "share of samples"],
               [[f"`{name}`", f"{n / total:.0%}"] for name, n in own])  # fmt: skip
    return f"{title}: {total} on-CPU samples (py-spy, 200 Hz, all threads).\n\n{pk}\n\n{fn}"


def redaction_breakdown(text: str, repeat: int = 300) -> list[tuple[str, float]]:
    """Microseconds per call of each step of redact() on ``text`` (each pattern alone)."""
    from backend.exceptions import redaction

    steps: list[tuple[str, float]] = []
    for i, (pattern, replacement) in enumerate(redaction._PATTERNS):
        started = time.perf_counter()
        for _ in range(repeat):
            pattern.sub(replacement, text)
        label = pattern.pattern if len(pattern.pattern) < 60 else pattern.pattern[:57] + "…"
        steps.append(
            (f"pattern {i + 1}: `{label.replace('|', '¦')}`", (time.perf_counter() - started) / repeat * 1e6)
        )
    started = time.perf_counter()
    for _ in range(repeat):
        for secret in redaction._env_secrets:
            if secret in text:
                text.replace(secret, redaction.MARK)
    steps.append(
        (f"{len(redaction._env_secrets)} literal secrets", (time.perf_counter() - started) / repeat * 1e6)
    )
    return steps
