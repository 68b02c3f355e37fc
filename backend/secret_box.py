"""Secrets crewrun must keep to use later (a webhook's signing secret), encrypted at rest: the
database holds ciphertext only, so a dump of it, a backup or the ledger's canary sweep finds no
secret. The key is the deployment's (``CREWRUN_WEBHOOK_KEY``, a Fernet key: every API and worker
process needs the same one); on one machine without it, a key file under the data dir is made on
first use (mode 0600) and shared by the processes of the embedded stack."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "webhook.key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def for_deployment(cls, configured: str, data_dir: Path) -> SecretBox:
        if configured:
            return cls(configured.encode())
        path = data_dir / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # exclusive: two processes starting together make one key
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as file:
                    file.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """Raises ValueError when the key is not the one that sealed it."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("sealed with another key: set the same CREWRUN_WEBHOOK_KEY everywhere") from exc
