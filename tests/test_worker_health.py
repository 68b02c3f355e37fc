"""The worker's own descriptor check: at its RLIMIT_NOFILE for the grace period, it recycles."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from backend.worker_health import DescriptorWatch, at_descriptor_limit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_must_hold_for_the_grace_period() -> None:
    at_limit = [True]
    clock = Clock()
    watch = DescriptorWatch(grace_s=10, probe=lambda: at_limit[0], clock=clock)
    assert watch.exhausted() is False  # first sighting
    clock.now = 9.9
    assert watch.exhausted() is False
    clock.now = 10.0
    assert watch.exhausted() is True


def test_a_moment_below_the_limit_starts_the_grace_period_over() -> None:
    at_limit = [True]
    clock = Clock()
    watch = DescriptorWatch(grace_s=10, probe=lambda: at_limit[0], clock=clock)
    watch.exhausted()
    clock.now = 8
    at_limit[0] = False
    assert watch.exhausted() is False
    at_limit[0] = True
    clock.now = 9
    assert watch.exhausted() is False
    clock.now = 18.9
    assert watch.exhausted() is False
    clock.now = 19
    assert watch.exhausted() is True


def test_a_process_at_its_descriptor_limit_knows_it() -> None:
    assert at_descriptor_limit() is False  # this test process has room
    script = (
        "import os, resource\n"
        "from backend.worker_health import at_descriptor_limit\n"
        "n = len(os.listdir('/proc/self/fd'))\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (n + 5, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "before = at_descriptor_limit()\n"
        "held = []\n"
        "while True:\n"
        "    try:\n"
        "        held.append(os.open('/dev/null', os.O_RDONLY))\n"
        "    except OSError:\n"
        "        break\n"
        "print(before, at_descriptor_limit())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.split() == ["False", "True"], out.stderr
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 100  # the limit was the child's only
