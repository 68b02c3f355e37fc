"""Keeps the embedded stack's children alive: a child that dies is started again.

A worker killed by the OOM killer in the middle of a crew must not take the API or Temporal with
it; Temporal carries its in-flight tasks over to the restarted worker. So each child (Temporal dev
server, embedded PostgreSQL, simulator, every worker one by one, the API) is watched on its own:

- a crash is logged with its exit code or signal and the last lines of that child's log;
- the child is started again after a backoff that doubles with each crash in a row (1 s, 2 s,
  4 s, ... 30 s at most); a child that stayed up for ``healthy_after_s`` starts from 1 s again;
- after ``crash_limit`` crashes within ``crash_window_s`` the supervisor gives up on that child and
  says so; the others keep running.

``<data_dir>/stack.json`` shows every child (pid, state, start time, restarts, last exit) for
``crewrun status``. The clock is injectable, so the backoff is tested without sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.stack import Child, Stack

STATUS_FILE = "stack.json"
LOG_TAIL_LINES = 12


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    crash_limit: int = 5  # crashes within crash_window_s before giving up on a child
    crash_window_s: float = 60.0
    healthy_after_s: float = 60.0  # up this long: the next crash starts the backoff over

    def backoff(self, consecutive_crashes: int) -> float:
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, consecutive_crashes - 1))


@dataclass
class Watch:
    """What the supervisor knows of one child besides its process."""

    state: str = "running"  # running | restarting | given_up
    crashes: deque[float] = field(default_factory=deque)  # monotonic times within the window
    consecutive: int = 0
    restart_at: float = 0.0
    last_exit: str | None = None
    up_since: float = 0.0  # monotonic


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Supervisor:
    def __init__(
        self,
        stack: Stack,
        policy: RestartPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] = _say,
        poll_s: float = 0.2,
    ) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self._clock = clock
        self._say = say
        self._poll_s = poll_s
        self._watches: dict[str, Watch] = {}
        self.status_path = stack.settings.data_dir / STATUS_FILE

    def watch(self, child: Child) -> Watch:
        if child.name not in self._watches:
            self._watches[child.name] = Watch(up_since=self._clock())
        return self._watches[child.name]

    def check(self) -> bool:
        """One round: note exits, restart children whose backoff is over. True when anything changed."""
        changed = False
        now = self._clock()
        with self.stack.lock:
            for child in list(self.stack.children):
                watch = self.watch(child)
                if watch.state == "running" and child.process.poll() is not None:
                    self._crashed(child, watch, now)
                    changed = True
                elif watch.state == "restarting" and now >= watch.restart_at:
                    self.stack.respawn(child)
                    watch.state, watch.up_since = "running", now
                    self._say(
                        f"crewrun up: {child.name} started again (pid {child.process.pid}, "
                        f"restart {child.restarts})"
                    )
                    changed = True
        if changed:
            self.write_status()
        return changed

    def _crashed(self, child: Child, watch: Watch, now: float) -> None:
        policy = self.policy
        watch.last_exit = describe_exit(child.process.returncode)
        if now - watch.up_since >= policy.healthy_after_s:
            watch.consecutive = 0
        watch.consecutive += 1
        watch.crashes.append(now)
        while watch.crashes and now - watch.crashes[0] > policy.crash_window_s:
            watch.crashes.popleft()
        tail = log_tail(child.log_path)
        where = f"(log: {child.log_path})"
        if len(watch.crashes) >= policy.crash_limit:
            watch.state = "given_up"
            self._say(
                f"crewrun up: {child.name} {watch.last_exit}; it crashed {len(watch.crashes)} times "
                f"within {policy.crash_window_s:.0f} s, giving up on it {where}\n{tail}"
            )
            return
        delay = policy.backoff(watch.consecutive)
        watch.state, watch.restart_at = "restarting", now + delay
        self._say(
            f"crewrun up: {child.name} {watch.last_exit} after {now - watch.up_since:.1f} s; "
            f"restarting it in {delay:.0f} s {where}\n{tail}"
        )

    def status(self) -> dict[str, Any]:
        children = []
        with self.stack.lock:
            for child in self.stack.children:
                watch = self.watch(child)
                alive = watch.state == "running" and child.process.poll() is None
                children.append(
                    {
                        "name": child.name,
                        "pid": child.process.pid if alive else None,
                        "state": watch.state,
                        "started_at": datetime.fromtimestamp(child.started_at, UTC).isoformat(),
                        "restarts": child.restarts,
                        "last_exit": watch.last_exit,
                        "log": str(child.log_path),
                    }
                )
        return {"supervisor_pid": os.getpid(), "children": children}

    def write_status(self) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2))
        os.replace(tmp, self.status_path)

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Supervise until ``until()`` is true (or Ctrl-C). Runs on the thread that started the
        stack: children get PR_SET_PDEATHSIG, which fires when the *thread* that forked them
        exits, so a restart from a helper thread would die with that thread."""
        for child in self.stack.children:
            self.watch(child)
        self.write_status()
        try:
            while not until():
                time.sleep(self._poll_s)
                self.check()
        finally:
            self.status_path.unlink(missing_ok=True)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The status a running ``crewrun up`` wrote, or None when none is running there."""
    try:
        status: dict[str, Any] = json.loads((data_dir / STATUS_FILE).read_text())
        os.kill(int(status["supervisor_pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status
