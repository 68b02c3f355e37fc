"""The supervisor of `crewrun up`: a child that dies is started again after a doubling backoff,
a crash loop makes it give up on that child only, and every crash is reported with its exit code
or signal and the tail of the child's log. Real child processes; the clock is injected, so the
backoff is checked without sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backend.settings import Settings
from backend.stack import Child, Stack
from backend.supervisor import RestartPolicy, Supervisor, describe_exit, read_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crashing_child(stack: Stack, name: str = "worker", code: int = 3) -> Child:
    """A child that writes a line to its log and exits with ``code`` every time it starts."""
    script = f"import sys; print('{name} starting', flush=True); print('boom: out of luck', flush=True); sys.exit({code})"
    return stack._spawn(name, [sys.executable, "-c", script])


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def supervisor(stack: Stack, clock: Clock, said: list[str]) -> Supervisor:
    sup = Supervisor(stack, RestartPolicy(), clock=clock, say=said.append)
    for child in stack.children:
        sup.watch(child)
    return sup


def exited(child: Child) -> None:
    child.process.wait(10)


def test_a_crashed_child_is_restarted_with_a_backoff_that_doubles(stack: Stack, clock: Clock) -> None:
    said: list[str] = []
    child = crashing_child(stack)
    sup = supervisor(stack, clock, said)
    delays = []
    for restart in range(1, 5):
        exited(child)
        crashed_at = clock.now
        assert sup.check() is True
        assert sup.watch(child).state == "restarting"
        delays.append(sup.watch(child).restart_at - crashed_at)
        clock.now = sup.watch(child).restart_at - 0.01
        sup.check()
        assert child.restarts == restart - 1  # not before its backoff is over
        clock.now += 0.01
        sup.check()
        assert child.restarts == restart and sup.watch(child).state == "running"
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert "worker exit code 3" in said[0] and "restarting it in 1 s" in said[0]
    assert "boom: out of luck" in said[0]  # the tail of the child's own log
    assert f"(log: {child.log_path})" in said[0]


def test_five_crashes_within_a_minute_give_up_on_that_child_only(stack: Stack, clock: Clock) -> None:
    said: list[str] = []
    child = crashing_child(stack)
    healthy = stack._spawn("api", [sys.executable, "-c", "import time; time.sleep(60)"])
    sup = supervisor(stack, clock, said)
    try:
        for _ in range(5):
            exited(child)
            sup.check()
            if sup.watch(child).state == "restarting":
                clock.now = sup.watch(child).restart_at
                sup.check()
        assert sup.watch(child).state == "given_up"
        assert child.restarts == 4
        assert "crashed 5 times within 60 s, giving up on it" in said[-1]
        clock.now += 120
        sup.check()
        assert child.restarts == 4  # given up: never started again
        assert sup.watch(healthy).state == "running" and healthy.process.poll() is None
    finally:
        stack.stop()


def test_a_child_that_stayed_up_starts_the_backoff_over(stack: Stack, clock: Clock) -> None:
    said: list[str] = []
    child = crashing_child(stack)
    sup = supervisor(stack, clock, said)
    for _ in range(3):  # 1 s, 2 s, 4 s
        exited(child)
        sup.check()
        clock.now = sup.watch(child).restart_at
        sup.check()
    exited(child)
    clock.now += 61  # it ran for over a minute before this crash
    sup.check()
    assert sup.watch(child).restart_at - clock.now == 1.0


def test_the_backoff_is_capped_at_30_seconds() -> None:
    policy = RestartPolicy()
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5, 6, 7, 12)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_crash_names_the_signal_that_killed_the_child(stack: Stack, clock: Clock) -> None:
    said: list[str] = []
    child = stack._spawn("temporal", [sys.executable, "-c", "import time; time.sleep(60)"])
    sup = supervisor(stack, clock, said)
    os.kill(child.process.pid, signal.SIGKILL)
    exited(child)
    sup.check()
    assert said[0].startswith("crewrun up: temporal killed by SIGKILL after ")
    assert sup.watch(child).last_exit == "killed by SIGKILL"
    clock.now = sup.watch(child).restart_at
    sup.check()
    try:
        assert child.process.poll() is None  # the same command runs again
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (0, "exit code 0"),
        (75, "exit code 75"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_exits_are_described_by_code_or_signal(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


def test_the_status_file_lists_every_child_while_the_supervisor_runs(stack: Stack, clock: Clock) -> None:
    stack._spawn("api", [sys.executable, "-c", "import time; time.sleep(60)"])
    child = crashing_child(stack)
    sup = supervisor(stack, clock, [])
    try:
        exited(child)
        sup.check()  # writes the status on every change
        status = read_status(stack.settings.data_dir)
        assert status is not None and status["supervisor_pid"] == os.getpid()
        by_name = {c["name"]: c for c in status["children"]}
        assert (
            by_name["api"]["state"] == "running" and by_name["api"]["pid"] == stack.child("api").process.pid
        )
        assert by_name["worker"] == by_name["worker"] | {
            "state": "restarting",
            "pid": None,
            "restarts": 0,
            "last_exit": "exit code 3",
        }
    finally:
        stack.stop()


def test_a_status_file_of_a_dead_supervisor_is_not_believed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / "stack.json").write_text(f'{{"supervisor_pid": {dead.stdout.strip()}, "children": []}}')
    assert read_status(tmp_path) is None
    assert read_status(tmp_path / "nowhere") is None
