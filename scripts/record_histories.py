"""Record workflow histories for the replay test (tests/test_replay.py).

    .venv/bin/python scripts/record_histories.py SUFFIX

Runs a few representative executions (completed; transient retries; failed + compensated;
paused then resumed; optional task degraded; a human_input task rejected once, then approved;
two async tasks joined before a third) on a local dev server with the real worker and
simulator, and saves each history as JSON under tests/histories/ as ``<path><SUFFIX>.json``.
Record a new set (a new suffix) after a workflow change made with ``workflow.patched``: the old
sets stay, so the replay test keeps proving that executions started before the change still
replay. Overwrite a set only on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import uuid
from pathlib import Path

from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.db.engine import upgrade_database  # noqa: E402
from backend.db.store import Store  # noqa: E402
from backend.executions import start_workflow  # noqa: E402
from backend.settings import SEARCH_ATTRIBUTES, Settings  # noqa: E402
from backend.simulator.script import FaultRule  # noqa: E402
from backend.specs import CrewSpec, RetryOverride  # noqa: E402
from backend.worker_factory import build_worker  # noqa: E402
from tests.support import SimulatorServer, research_spec, tool_path  # noqa: E402
from workflows.contracts import FeedbackRequest, ResumeRequest  # noqa: E402

OUT = ROOT / "tests" / "histories"


async def main(suffix: str) -> None:
    sim = SimulatorServer().start()
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'crewrun.db'}"
    upgrade_database(url)
    store = Store.from_url(url)
    fast = {
        c: RetryOverride(initial_interval_s=0.05, maximum_interval_s=0.2)
        for c in ("external_service", "rate_limit")
    }
    settings = Settings(data_dir=tmp, database_url=url, task_queue=f"rec-{uuid.uuid4().hex[:6]}", retry=fast)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=tool_path("temporal"),
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        ui=False,
    )
    worker = build_worker(env.client, settings, store=store)

    async def run(
        name: str, spec: dict, faults: list[FaultRule], resume: bool = False, review: bool = False
    ) -> None:
        sim.reset()
        sim.script.add_rules(faults)
        validated = CrewSpec.model_validate(spec).model_dump(mode="json")
        execution, _ = store.create_execution(
            crew_id=None,
            crew_name=validated["name"],
            spec=validated,
            inputs={"topic": "tides"},
            idempotency_key=None,
            request_hash=None,
        )
        handle = await start_workflow(env.client, settings, store, execution)
        if resume:
            while (await handle.query("status")) != "paused":
                await asyncio.sleep(0.1)
            sim.script.heal()
            await handle.signal("resume", ResumeRequest())
        if review:  # reject the first output, approve the second
            task = spec["tasks"][-1]["name"]
            for revision, approve in ((0, False), (1, True)):
                while not awaiting(execution.id, task, revision):
                    await asyncio.sleep(0.1)
                await handle.signal("feedback", FeedbackRequest(task, approve, "" if approve else "shorter"))
        with contextlib.suppress(Exception):  # failed executions are histories too
            await handle.result()
        history = await handle.fetch_history()
        (OUT / f"{name}{suffix}.json").write_text(history.to_json())
        print(f"recorded {name}{suffix}: {len(history.events)} events")

    def awaiting(execution_id: str, task: str, revision: int) -> bool:
        row = store.get_execution(execution_id)
        found = next((t for t in row.tasks if t.name == task), None) if row else None
        return bool(row and row.status == "awaiting_feedback" and found and found.revision == revision)

    async with worker:
        await run("completed", research_spec(sim.base_url), [])
        await run(
            "transient_retries",
            research_spec(sim.base_url),
            [FaultRule(kind="server_error", agent="analyst", count=2)],
        )
        await run(
            "failed_compensated",
            research_spec(sim.base_url),
            [FaultRule(kind="content_policy", agent="analyst", count=None)],
        )
        await run(
            "paused_resumed",
            research_spec(sim.base_url),
            [FaultRule(kind="auth", agent="analyst", count=None)],
            resume=True,
        )
        optional = research_spec(sim.base_url)
        optional["tasks"][1]["critical"] = False
        await run("degraded", optional, [FaultRule(kind="content_policy", agent="analyst", count=None)])
        reviewed = research_spec(sim.base_url)
        reviewed["tasks"][-1]["human_input"] = True
        await run("human_review", reviewed, [], review=True)
        grouped = research_spec(sim.base_url)
        for task in grouped["tasks"][:2]:
            task["async_execution"], task["context"] = True, []
        await run("async_group", grouped, [])
    await env.shutdown()
    sim.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: record_histories.py SUFFIX  (an empty string overwrites the first set)")
    asyncio.run(main(sys.argv[1]))
