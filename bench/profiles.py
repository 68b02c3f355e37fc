"""Where the time goes, for the write-up of missed targets: py-spy samples of running processes
(all threads, native frames off) summarised by package and by crewrun function, CPU seconds per
process from /proc, and a per-pattern breakdown of redaction (a Python profiler cannot look inside a
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import table

_TICK = os.sysconf("SC_CLK_TCK")
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
            procs.append(
                subprocess.Popen(
                    [
                        tool,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--full-filenames",
                        "--output",
                        str(outputs[name]),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
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
    """The top-level package or standard-library module a frame ``name (path:line)`` belongs to."""
    path = frame.rsplit(" (", 1)[-1].rsplit(":", 1)[0]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if any(marker in path for marker in OWN):
        return "crewrun"
    if "/lib/python3" in path:
        return "stdlib " + path.split("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
    return "other"


def _function(frame: str) -> str:
    """``name (…/backend/db/store.py:123)`` → ``Store.x (store.py)``: lines of one function merged."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})"


@dataclass
class Summary:
    total: int = 0
    by_package: Counter[str] = field(default_factory=Counter)  # of the innermost frame
    by_leaf: Counter[str] = field(default_factory=Counter)  # innermost function
    by_own: Counter[str] = field(default_factory=Counter)  # innermost crewrun function on the stack


def summarise(collapsed: Path) -> Summary:
    """py-spy's collapsed stacks, attributed three ways: which package the CPU was in, which
    function, and which of crewrun's own functions led there."""
    out = Summary()
    if not collapsed.exists():
        return out
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        out.total += n
        frames = stack.split(";")
        out.by_package[_package(frames[-1])] += n
        out.by_leaf[_function(frames[-1])] += n
        mine = [f for f in frames if _package(f) == "crewrun"]
        out.by_own[_function(mine[-1]) if mine else "(no crewrun frame on the stack)"] += n
    return out


def markdown_profile(title: str, collapsed: Path) -> str:
    s = summarise(collapsed)
    if not s.total:
        return f"{title}: no py-spy samples (py-spy missing or not permitted to attach)."

    def share(counter: Counter[str], header: str, top: int = 8) -> str:
        return table(
            [header, "share"], [[f"`{k}`", f"{n / s.total:.0%}"] for k, n in counter.most_common(top)]
        )

    return "\n\n".join(
        [
            f"{title}: {s.total} samples (py-spy, 200 Hz, all threads, non-idle). Stdlib `concurrent` "
            "(`_worker`) and `selectors` samples are threads and the event loop waiting for work.",
            share(s.by_package, "innermost frame's package"),
            share(s.by_leaf, "innermost function", 6),
            share(s.by_own, "innermost crewrun function on the stack"),
        ]
    )


def redaction_breakdown(text: str, repeat: int = 300) -> list[tuple[str, float, bool]]:
    """Microseconds per call of each step of redact() on ``text``: the fold, then each rule alone
    (its literal check, and its pattern when the check lets it run), then the literal secrets.
    Each step: (label, µs, whether it ran or was skipped)."""
    from backend.exceptions import redaction

    def timed(step: Callable[[], object]) -> float:
        started = time.perf_counter()
        for _ in range(repeat):
            step()
        return (time.perf_counter() - started) / repeat * 1e6

    folded = redaction._fold(text)
    steps = [("fold to lower case", timed(lambda: redaction._fold(text)), True)]
    for i, rule in enumerate(redaction._RULES):
        haystack = folded if rule.folded else text
        runs = any(need in haystack for need in rule.needs)
        label = rule.pattern.pattern if len(rule.pattern.pattern) < 60 else rule.pattern.pattern[:57] + "…"
        cost = timed(lambda r=rule, h=haystack: any(n in h for n in r.needs))  # type: ignore[misc]
        if runs:
            cost += timed(lambda r=rule, h=haystack: redaction._mark(text, r.pattern.finditer(h)))  # type: ignore[misc]
        steps.append((f"rule {i + 1}: `{label.replace('|', '¦')}`", cost, runs))

    def literal_secrets() -> None:
        for secret in redaction._env_secrets:
            if secret in text:
                text.replace(secret, redaction.MARK)

    steps.append((f"{len(redaction._env_secrets)} literal secrets", timed(literal_secrets), True))
    return steps
