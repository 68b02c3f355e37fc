"""A worker that has run out of file descriptors notices it even when no task tells it.

A task attempt that hits EMFILE is classified (``RESOURCE_FILE_LIMIT``) and makes the worker
drain and exit for a fresh one (activities/crew_activities.py). But at its limit a worker also
fails every *workflow* task before any crewrun code runs (the sandbox cannot open the workflow's
module files) and would go on failing them forever while looking alive. So the worker checks its
own descriptors every few seconds; at the limit for ``grace_s`` in a row, it recycles itself.
"""

from __future__ import annotations

import errno
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def at_descriptor_limit() -> bool:
    """True when this process cannot open one more file."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        count = len(os.listdir("/proc/self/fd"))  # needs a descriptor itself
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return soft != resource.RLIM_INFINITY and count >= soft


@dataclass
class DescriptorWatch:
    grace_s: float = 10.0
    probe: Callable[[], bool] = at_descriptor_limit
    clock: Callable[[], float] = time.monotonic
    _since: float | None = field(default=None, init=False)

    def exhausted(self) -> bool:
        """One check: True once the limit has held for ``grace_s`` (a task that hits it in the
        meantime recycles the worker sooner, with its own error event)."""
        if not self.probe():
            self._since = None
            return False
        now = self.clock()
        if self._since is None:
            self._since = now
        return now - self._since >= self.grace_s
