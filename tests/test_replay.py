"""Saved workflow histories must replay against the current workflow code: an incompatible change
to CrewExecutionWorkflow (a reordered activity, a new step without a patch) fails here, in CI,
before it ships and breaks executions in flight. Re-record with scripts/record_histories.py only
on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.alert_delivery import AlertDeliveryWorkflow
from workflows.crew_execution import CrewExecutionWorkflow

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


PATHS = {"completed", "transient_retries", "failed_compensated", "paused_resumed", "degraded"}


def test_the_histories_cover_the_main_paths_before_and_after_each_patch() -> None:
    stems = {h.stem for h in HISTORIES}
    # The first set (before any workflow.patched change), then one set after each change.
    for suffix in ("", "_status_with_first_task", "_status_with_last_task"):
        assert {f"{p}{suffix}" for p in PATHS} <= stems, suffix
    # Since Python crews: the same paths, and a task under human review (rejected once, then
    # approved) and async tasks run together.
    assert {f"{p}_second_round" for p in (*PATHS, "human_review", "async_group")} <= stems


@pytest.mark.parametrize("path", HISTORIES, ids=[h.stem for h in HISTORIES])
async def test_saved_history_replays_on_the_current_workflow(path: Path) -> None:
    history = WorkflowHistory.from_json(f"crew-execution-{path.stem}", path.read_text())
    replayer = Replayer(workflows=[CrewExecutionWorkflow, AlertDeliveryWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
