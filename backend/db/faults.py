"""Fault points in the DB layer, for tests of what happens when a commit's outcome is unknown.

Production code calls ``faults.check("compensate.after_commit")`` at a few places; nothing is armed
unless a test arms it, so the check is a dictionary lookup. An "ambiguous commit" is the classic
case: the transaction committed, then the caller saw an error (a dropped connection), and retries.
"""

from __future__ import annotations

import threading


class DbFaults:
    def __init__(self) -> None:
        self._armed: dict[str, list[BaseException]] = {}
        self._lock = threading.Lock()
        self.fired: list[str] = []

    def arm(self, point: str, error: BaseException, times: int = 1) -> None:
        with self._lock:
            self._armed.setdefault(point, []).extend([error] * times)

    def check(self, point: str) -> None:
        with self._lock:
            pending = self._armed.get(point)
            if not pending:
                return
            error = pending.pop(0)
            self.fired.append(point)
        raise error


NO_FAULTS = DbFaults()
