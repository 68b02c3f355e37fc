"""The backend DB's disk fills while a task is in flight: SQLite on a real 16 MB tmpfs, filled to
the last byte by a file beside it. The task's attempts fail as RESOURCE_DISK_FULL (category
resource_exhaustion, its budget), their error events wait in the heartbeat details until the
database can take them, nothing committed before is lost, and once space is freed the execution
completes. The API on a full disk answers with a problem code, not a 500."""

from __future__ import annotations

import errno
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from backend.api.app import create_app
from backend.db.engine import upgrade_database
from backend.db.store import Store
from backend.executions import start_workflow
from backend.settings import Settings
from backend.simulator.script import FaultRule
from backend.specs import CrewSpec
from backend.worker_factory import build_worker
from tests.ledger import check_ledger
from tests.support import SimulatorServer, research_spec

DISK_MB = 16


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of its own, 16 MB (tmpfs: needs root, as on this project's machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs here (root needed): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return filler


async def pending_attempt(client: Client, workflow_id: str) -> int:
    described = await client.get_workflow_handle(workflow_id).describe()
    pending = described.raw_description.pending_activities
    return pending[0].attempt if pending else 0


async def test_a_full_disk_fails_attempts_as_disk_full_and_loses_nothing_committed(
    tiny_disk: Path, temporal_client: Client, sim: SimulatorServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tiny_disk / 'crewrun.db'}"
    upgrade_database(url)
    store = Store.from_url(url)
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        task_queue=f"disk-{uuid.uuid4().hex[:8]}",
        task_heartbeat_timeout_s=5,
        retry={
            "resource_exhaustion": {
                "maximum_attempts": 30,
                "initial_interval_s": 0.2,
                "maximum_interval_s": 0.3,
            }
        },
    )
    sim.script.add_rules([FaultRule(kind="slow", agent="analyst", delay_s=1)])
    spec = CrewSpec.model_validate(research_spec(sim.base_url)).model_dump(mode="json")
    execution, _ = store.create_execution(
        crew_id=None,
        crew_name="research",
        spec=spec,
        inputs={"topic": "disks"},
        idempotency_key=None,
        request_hash=None,
    )
    async with build_worker(temporal_client, settings, store=store):
        handle = await start_workflow(temporal_client, settings, store, execution)
        while not sim.calls("analyst"):  # task 2 is in flight: task 1's output is committed
            await _tick()
        committed = {t.name: t.output for t in tasks_of(store, execution.id) if t.status == "completed"}
        assert list(committed) == ["research"]

        filler = fill(tiny_disk)
        while await pending_attempt(temporal_client, handle.id) < 3:  # 2 attempts failed on the full disk
            await _tick()
        # The API on a full disk: a problem with a code, never a 500; the execution is untouched.
        app = create_app(settings, temporal_client=temporal_client, reconcile=False)
        async with app.router.lifespan_context(app), _api(app) as api:
            refused = await api.post(
                "/api/v1/executions",
                json={"crew": research_spec(sim.base_url, name="x"), "inputs": {"topic": "more"}},
            )
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "DATABASE_UNAVAILABLE"
        assert refused.json()["detail"] == "the backend database is out of disk space"
        filler.unlink()
        result = await handle.result()

    assert result.status == "completed"
    tasks = {t.name: t for t in tasks_of(store, execution.id)}
    assert tasks["research"].output == committed["research"] and tasks["research"].attempts == 1
    failed_attempts = tasks["analyse"].attempts - 1
    assert failed_attempts >= 2
    events = store.list_error_events(execution.id, limit=100, cursor=None).items
    # Every failed attempt's event was written once the disk had room again, none twice.
    assert [(e.task, e.code, e.category, e.attempt) for e in events] == [
        ("analyse", "RESOURCE_DISK_FULL", "resource_exhaustion", n) for n in range(1, failed_attempts + 1)
    ]
    assert "database or disk is full" in events[0].message
    report = await check_ledger(store, temporal_client, [execution.id])
    assert report.problems == [] and report.duplicates == 0, report.problems


def tasks_of(store: Store, execution_id: str) -> list[Any]:
    row = store.get_execution(execution_id)
    assert row is not None
    return list(row.tasks)


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def _api(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
