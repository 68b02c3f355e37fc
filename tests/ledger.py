"""The ledger of docs/scenarios.md as one reusable check: after a scenario, every
accepted execution ended once, DB and Temporal agree, nothing was written twice, the counts
balance, no canary leaked, and provider calls stayed within budget."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import create_engine, func, inspect, select, text
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus

from backend.db.models import Alert, DeadLetter, ExecutionFailure, TaskRun
from backend.db.store import Store, workflow_id_for
from tests.support import tool_path

TERMINAL = {"completed", "degraded", "failed", "cancelled"}
CLOSED_AS = {
    "completed": {WorkflowExecutionStatus.COMPLETED},
    "degraded": {WorkflowExecutionStatus.COMPLETED},
    "failed": {WorkflowExecutionStatus.FAILED},
    "cancelled": {WorkflowExecutionStatus.CANCELED},
}


@dataclass
class LedgerReport:
    accepted: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    final_records: int = 0
    dead_letter_alerts: int = 0
    duplicates: int = 0
    leaks: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        s = self.by_status
        return (
            f"accepted {self.accepted}, completed {s['completed']}, degraded {s['degraded']}, failed {s['failed']}, "
            f"cancelled {s['cancelled']}, final records {self.final_records}, dead letters {self.dead_letters}, "
            f"dead-letter alerts {self.dead_letter_alerts}, duplicates {self.duplicates}, leaks {self.leaks}"
        )


async def closed_workflow(
    client: Client, workflow_id: str, timeout_s: float = 15
) -> WorkflowExecutionDescription:
    """The workflow once closed: the DB turns terminal in the compensation or final status activity,
    a moment before the workflow itself completes."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = asyncio.get_running_loop().time() + timeout_s
    described = await handle.describe()
    while (
        described.status == WorkflowExecutionStatus.RUNNING and asyncio.get_running_loop().time() < deadline
    ):
        await asyncio.sleep(0.2)
        described = await handle.describe()
    return described


async def check_ledger(
    store: Store,
    client: Client,
    accepted: list[str],
    *,
    canaries: tuple[str, ...] = (),
    places: dict[str, str] | None = None,
    max_calls_per_logical_call: int | None = None,
    calls_per_task: dict[tuple[str, str], int] | None = None,
    expect_dead_letter_alerts: bool = True,
) -> LedgerReport:
    report = LedgerReport(accepted=len(accepted))
    ended_badly: list[str] = []
    for execution_id in accepted:
        row = store.get_execution(execution_id)
        if row is None:
            report.problems.append(f"{execution_id}: accepted but not in the DB")
            continue
        report.by_status[row.status] += 1
        if row.status in ("failed", "cancelled"):
            ended_badly.append(execution_id)
        if row.status not in TERMINAL:
            report.problems.append(f"{execution_id}: still {row.status}")
            continue
        described = await closed_workflow(client, row.workflow_id)
        if described.status not in CLOSED_AS[row.status]:
            report.problems.append(f"{execution_id}: DB says {row.status}, Temporal says {described.status}")
    with store.db.read() as s:
        for model in (ExecutionFailure, DeadLetter):
            rows = s.execute(
                select(model.execution_id, func.count())
                .where(model.execution_id.in_(accepted))
                .group_by(model.execution_id)
            ).all()
            counts = dict(rows)
            total = sum(counts.values())
            if model is DeadLetter:
                report.dead_letters = total
                lettered = counts
            else:
                report.final_records = total
            report.duplicates += sum(n - 1 for n in counts.values() if n > 1)
        missing = [e for e in ended_badly if e not in lettered]
        report.problems += [f"{e}: ended badly without a dead letter" for e in missing]
        # One alert per alert-worthy event: every dead letter raises exactly one (rule kind
        # dead_letter, on by default), whatever retries the compensation went through.
        alerted = dict(
            s.execute(
                select(Alert.execution_id, func.count())
                .where(Alert.rule == "dead-letter", Alert.execution_id.in_(accepted))
                .group_by(Alert.execution_id)
            ).all()
        )
        report.dead_letter_alerts = sum(alerted.values())
        report.duplicates += sum(n - 1 for n in alerted.values() if n > 1)
        if expect_dead_letter_alerts:
            report.problems += [
                f"{e}: dead letter without its alert" for e in ended_badly if e not in alerted
            ]
        outputs = s.execute(
            select(TaskRun.execution_id, TaskRun.name, func.count())
            .where(TaskRun.execution_id.in_(accepted))
            .group_by(TaskRun.execution_id, TaskRun.name)
        ).all()
        report.duplicates += sum(n - 1 for _, _, n in outputs if n > 1)
    balance = sum(report.by_status[s] for s in TERMINAL)
    if balance != report.accepted:
        report.problems.append(f"counts do not balance: {balance} terminal of {report.accepted} accepted")
    for place, content in (places or {}).items():
        for canary in canaries:
            if found := content.count(canary):
                report.leaks += found
                report.problems.append(f"{canary} leaked into {place} ({found}x)")
    if max_calls_per_logical_call is not None and calls_per_task:
        over = {k: n for k, n in calls_per_task.items() if n > max_calls_per_logical_call}
        report.problems += [f"{k}: {n} provider calls" for k, n in over.items()]
    return report


async def places_a_secret_could_reach(
    api: httpx.AsyncClient, client: Client, db_url: str, accepted: list[str], logs: str = ""
) -> dict[str, str]:
    """Everything crewrun wrote about these executions, by place: every DB row (alerts included),
    the API's answers, the metrics, the log lines and the Temporal histories (read with the real
    CLI, as an operator would)."""
    responses = []
    for e in accepted:
        for path in (
            f"/api/v1/executions/{e}",
            f"/api/v1/executions/{e}/errors",
            f"/api/v1/executions/{e}/logs",
            f"/api/v1/executions/{e}/steps",
        ):
            responses.append((await api.get(path)).text)
    for path in ("/api/v1/executions", "/api/v1/alerts", "/api/v1/dead-letters", "/api/v1/errors"):
        responses.append((await api.get(path, params={"limit": 100})).text)
    histories = []
    for e in accepted:
        histories.append(
            subprocess.run(
                [
                    tool_path("temporal"),
                    "workflow",
                    "show",
                    "--workflow-id",
                    workflow_id_for(e),
                    "--output",
                    "json",
                    "--address",
                    client.service_client.config.target_host,
                    "--namespace",
                    client.namespace,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        )
    return {
        "db": _all_rows(db_url),
        "api": "\n".join(responses),
        "metrics": (await api.get("/metrics")).text,
        "history": "\n".join(histories),
        "logs": logs,
    }


def _all_rows(db_url: str) -> str:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        dump = [
            repr(list(conn.execute(text(f'SELECT * FROM "{t}"')))) for t in inspect(engine).get_table_names()
        ]
    engine.dispose()
    return "\n".join(dump)


def calls_by_logical_call(calls: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Provider calls per (agent, task prompt): with distinct inputs per execution, one logical call."""
    return dict(Counter((c["agent"], c["task_hint"]) for c in calls))
