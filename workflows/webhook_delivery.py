"""WebhookDelivery: one workflow per execution with webhooks, delivering its events in order until
the execution has ended and every event is taken.

The same durable delivery as alerts: an activity that is retried without an attempt limit, with
backoff, so a receiver that is down for an hour gets every event once it is back. Events are read
from the outbox (backend/db/webhooks.py), where they were written with what they report; between
rounds the workflow waits a little longer while nothing new comes (at most 5 s), and it starts
anew (continue-as-new) before its history grows large.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import DELIVER_WEBHOOKS_ACTIVITY, WEBHOOK_WORKFLOW_NAME, WebhookProgress

ROUNDS_PER_RUN = 200  # then continue-as-new: a long execution's history stays small
IDLE_S = (0.5, 5.0)  # the wait between rounds: from, at most


@workflow.defn(name=WEBHOOK_WORKFLOW_NAME)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, execution_id: str, max_interval_s: float = 30.0) -> int:
        delivered = 0
        idle = IDLE_S[0]
        for _ in range(ROUNDS_PER_RUN):
            progress: WebhookProgress = await workflow.execute_activity(
                DELIVER_WEBHOOKS_ACTIVITY,
                execution_id,
                result_type=WebhookProgress,
                start_to_close_timeout=timedelta(seconds=120),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=max_interval_s),
                    maximum_attempts=0,  # a refused event waits; it is never dropped
                ),
                summary=f"deliver the webhooks of execution {execution_id}",
            )
            delivered += progress.delivered
            if progress.done:
                return delivered
            idle = IDLE_S[0] if progress.delivered else min(idle * 2, IDLE_S[1])
            await workflow.sleep(timedelta(seconds=idle))
        workflow.continue_as_new(args=[execution_id, max_interval_s])
