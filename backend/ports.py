"""Choosing loopback ports for stacks started on "free ports" (tests, benchmarks, `crewrun demo --fresh`).

Asking the kernel for port 0 returns a port from the ephemeral range, the same range every
outgoing connection takes its local port from. Between choosing such a port and the child
process binding it, a connection (to Temporal, the DB, the simulator…) can take it, and the
child dies with "Address already in use" (it happened to a worker's metrics port in CI).
So ports are chosen below the ephemeral range, where nothing is assigned implicitly, from a
per-process cursor that never hands out the same block twice.
"""

from __future__ import annotations

import itertools
import random
import socket
import threading
from pathlib import Path

# Each port handed out is the first of a block of this many free ports: a stack with several
# workers gives worker i the metrics ports base + 2 * i (see Stack._worker_metric_ports).
BLOCK = 4
WINDOW = 8000  # ports below the ephemeral range to choose from
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
    """A port that is free now, with the BLOCK - 1 ports after it, and not handed out before by
    this process; never one the kernel hands to outgoing connections."""
    global _cursor
    top = ephemeral_range_start()
    bottom = max(1024, top - WINDOW)
    blocks = (top - bottom) // BLOCK
    with _lock:
        if _cursor is None:  # random start: two processes choosing at once rarely meet
            _cursor = itertools.count(random.randrange(blocks))
        for _ in range(blocks):
            base = bottom + (next(_cursor) % blocks) * BLOCK
            if all(port_is_free(host, base + i) for i in range(BLOCK)):
                return base
    raise RuntimeError(f"no {BLOCK} consecutive free ports between {bottom} and {top}")
