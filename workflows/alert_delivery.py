"""AlertDelivery: one workflow per alert, retrying its delivery until every sink accepted it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import ALERT_WORKFLOW_NAME, DELIVER_ALERT_ACTIVITY


@workflow.defn(name=ALERT_WORKFLOW_NAME)
class AlertDeliveryWorkflow:
    @workflow.run
    async def run(self, alert_id: str, max_interval_s: float = 30.0) -> None:
        # No attempt limit: a sink that is down for a while delays the alert, never drops it.
        await workflow.execute_activity(
            DELIVER_ALERT_ACTIVITY,
            alert_id,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(days=1),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=max_interval_s),
                maximum_attempts=0,
            ),
            summary=f"deliver alert {alert_id}",
        )
