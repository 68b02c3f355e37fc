"""Choosing loopback ports for stacks started on "free ports" (tests, benchmarks, `crewrun demo --fresh`).

Asking the kernel for port 0 returns a port from the ephemeral range, the same range every
outgoing connection takes its local port from. Between choosing such a port and the child
process binding it, a connection (to Temporal, the DB, the simulator…) can take it, and the
child dies with "Address already in use" (it happened to a worker's metrics port in CI).
So ports are chosen below the ephemeral range, where nothing is assigned implicitly, from a
per-process cursor that never hands out the same block twice.

Processes choosing at the same time (parallel test processes, a stack and the test that started
it) each see a block free while its owner has not bound it yet, or between a stack's stop and its
restart on the same ports: two of them then got the same port (CI lost a `crewrun up` that way).
So each block handed out is also reserved machine-wide for a few minutes, by a file created with
O_EXCL under the temporary directory; other processes skip reserved blocks while unreserved free
ones remain.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

# Each port handed out is the first of a block of this many free ports: a stack with several
# workers gives worker i the metrics ports base + 2 * i (see Stack._worker_metric_ports).
BLOCK = 4
WINDOW = 8000  # ports below the ephemeral range to choose from
# A block handed out stays reserved for the other processes for LEASE_S to 2 * LEASE_S.
LEASE_S = 300.0
RESERVATIONS = Path(tempfile.gettempdir()) / "crewrun-ports"
_lock = threading.Lock()
_cursor: itertools.count[int] | None = None


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_range_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux default


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, with the BLOCK - 1 ports after it, not handed out before by this
    process nor, while others are free, reserved by another; never one the kernel hands to
    outgoing connections."""
    global _cursor
    top = ephemeral_range_start()
    bottom = max(1024, top - WINDOW)
    blocks = (top - bottom) // BLOCK
    with _lock:
        if _cursor is None:  # random start: two processes choosing at once rarely meet
            _cursor = itertools.count(random.randrange(blocks))
        start = next(_cursor)
        # First a block no other process holds a reservation for; when every free block is
        # reserved, any free one (the reservations are a courtesy between crewrun's processes).
        for reserving in (True, False):
            for step in range(blocks):
                base = bottom + ((start + step) % blocks) * BLOCK
                if all(port_is_free(host, base + i) for i in range(BLOCK)) and (
                    not reserving or reserve(base)
                ):
                    _cursor = itertools.count(start + step + 1)
                    return base
    raise RuntimeError(f"no {BLOCK} consecutive free ports between {bottom} and {top}")


def reserve(base: int, now: float | None = None, directory: Path | None = None) -> bool:
    """Reserve the block at ``base`` for this process; False when another process reserved it
    within the lease. A reservation is the file ``<base>.<period>`` created with O_EXCL, where the
    period is the lease's number since the epoch; one of this period or the last holds the block."""
    directory = directory or RESERVATIONS
    period = int((time.time() if now is None else now) // LEASE_S)
    try:
        directory.mkdir(exist_ok=True)
    except OSError:
        return True  # no shared temporary directory: nothing to coordinate through
    if (directory / f"{base}.{period - 1}").exists():
        return False
    try:
        os.close(os.open(directory / f"{base}.{period}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    except OSError:
        return True
    for old in directory.glob(f"{base}.*"):
        if old.suffix[1:].isdigit() and int(old.suffix[1:]) < period - 1:
            old.unlink(missing_ok=True)
    return True
