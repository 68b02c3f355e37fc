"""Ambiguous commits for tests: a named transaction commits, then its caller sees an error (a
connection that dropped as the COMMIT's answer came back), and retries.

Injected from outside through SQLAlchemy's ``after_commit`` event on the database's sessions, by
transaction name (``Database.transaction(name)``): production code has no fault branches.
"""

from __future__ import annotations

import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

from backend.db.database import Database


class CommitFaults:
    def __init__(self, db: Database) -> None:
        self._armed: dict[str, list[BaseException]] = {}
        self._lock = threading.Lock()
        self.fired: list[str] = []
        event.listen(db.sessions, "after_commit", self._after_commit)

    def arm(self, transaction: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` commits of transactions named ``transaction`` raise ``error``."""
        with self._lock:
            self._armed.setdefault(transaction, []).extend([error] * times)

    def _after_commit(self, session: Session) -> None:
        name = session.info.get("transaction")
        with self._lock:
            pending = self._armed.get(name) if name else None
            if not pending:
                return
            error = pending.pop(0)
            self.fired.append(name)
        raise error
