"""CrewAI's hosted-API routes for a crew, so that clients written against a CrewAI deployment
(``/inputs``, ``/kickoff``, ``/status/{kickoff_id}``, ``/resume``) run crews on crewrun unchanged
but for their base URL: ``/crewai/{crew_name}``.

Shapes follow CrewAI's published API description (its OpenAPI ``enterprise-api``): errors are
``{"error", "message"}`` bodies, not problem+json. Where CrewAI's own clients read something the
description does not have, both are given: the status carries ``state`` (``SUCCESS``, ``FAILED``,
``RUNNING``, ``PENDING_HUMAN_INPUT``) beside ``status``. Every request goes through crewrun's own
path (the same acceptance, the same workflow update for feedback) and needs the same API key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.api.accept import CrewChoice, accept_execution
from backend.api.deps import ClientDep, GatewayDep, SettingsDep, StoreDep
from backend.api.problems import ProblemError
from backend.api.routes.executions import send_update
from backend.api.schemas import WebhookSpec
from backend.api.webhook_specs import box_of
from backend.db.models import Execution
from backend.db.webhooks import Subscription
from backend.exceptions.redaction import add_secrets
from backend.secret_box import SecretBox
from backend.specs import NAME_PATTERN, CrewSpec, check_storable
from backend.status import ExecutionStatus, TaskStatus
from workflows.contracts import FeedbackRequest

router = APIRouter(prefix="/crewai/{crew_name}", tags=["crewai-compatible"])
CrewName = Annotated[str, Path(max_length=100, pattern=NAME_PATTERN)]
# Which crewrun events each of CrewAI's webhooks gets.
WEBHOOK_EVENTS = {
    "taskWebhookUrl": ("task_completed", "task_failed", "awaiting_feedback"),
    "stepWebhookUrl": ("step",),
    "crewWebhookUrl": ("execution_finished",),
}


class _Webhooks(BaseModel):
    model_config = ConfigDict(extra="ignore")  # CrewAI clients send fields crewrun has no use for

    taskWebhookUrl: str | None = Field(default=None, max_length=2000)  # noqa: N815 (CrewAI's names)
    stepWebhookUrl: str | None = Field(default=None, max_length=2000)  # noqa: N815
    crewWebhookUrl: str | None = Field(default=None, max_length=2000)  # noqa: N815
    # crewrun's addition: sign the webhooks (X-CrewAI-Signature, as CrewAI signs its HITL ones).
    webhookSecret: str | None = Field(default=None, min_length=8, max_length=500)  # noqa: N815

    @field_validator("taskWebhookUrl", "stepWebhookUrl", "crewWebhookUrl")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value if value is None else WebhookSpec(url=value).url

    def subscriptions(self, meta: dict[str, Any] | None, box: SecretBox) -> list[Subscription]:
        sealed = None
        if self.webhookSecret:
            add_secrets([self.webhookSecret])
            sealed = box.seal(self.webhookSecret)
        return [
            Subscription(url=url, events=events, format="crewai", meta=meta, secret_ciphertext=sealed)
            for field, events in WEBHOOK_EVENTS.items()
            if (url := getattr(self, field))
        ]


class KickoffBody(_Webhooks):
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] | None = None

    _storable = field_validator("inputs", "meta")(check_storable)


class ResumeBody(_Webhooks):
    execution_id: str = Field(max_length=64)
    task_id: str = Field(max_length=200)
    human_feedback: str = Field(default="", max_length=20_000)
    is_approve: bool

    _storable = field_validator("human_feedback")(check_storable)


class CrewAIError(BaseModel):
    error: str
    message: str
    details: dict[str, Any] | None = None


class InputsAnswer(BaseModel):
    inputs: list[str]


class KickoffAnswer(BaseModel):
    kickoff_id: str


class ResumeAnswer(BaseModel):
    status: str  # resumed | retrying
    message: str


class StatusAnswer(BaseModel):
    """One of CrewAI's three shapes (running, completed, error), ``state`` beside ``status``."""

    model_config = ConfigDict(extra="allow")

    status: str
    state: str


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """CrewAI's error bodies are JSON (a malformed body, or no key, is still a problem+json)."""
    body = {"schema": CrewAIError.model_json_schema()}
    problem = {"schema": {"$ref": "#/components/schemas/ProblemPublic"}}
    return {
        status: {
            "description": "CrewAI's error shape, or a problem",
            "content": {"application/json": body, "application/problem+json": problem},
        }
        for status in statuses
    }


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _from_problem(problem: ProblemError) -> JSONResponse:
    """crewrun's refusal in CrewAI's words."""
    code, status = problem.entry.code, problem.entry.http_status
    if code == "CREW_SPEC_INVALID":
        missing = [e["loc"][-1] for e in problem.errors or [] if e.get("type") == "missing"]
        return _error(422, "Validation Error", "Missing required inputs", details={"missing_inputs": missing})
    if status == 404:
        return _error(404, "Not Found", problem.detail)
    if code in ("EXECUTION_NOT_AWAITING_FEEDBACK", "EXECUTION_TERMINAL"):
        return _error(400, "Invalid Request", "Execution is not in pending human input state")
    return _error(status, code, problem.detail)


@router.get("/inputs", response_model=InputsAnswer, responses=_documented(404))
async def inputs(crew_name: CrewName, store: StoreDep) -> Any:
    crew = await asyncio.to_thread(store.crew_by_name, crew_name)
    if crew is None:
        return _error(404, "Not Found", f"No crew named {crew_name}")
    return {"inputs": sorted(CrewSpec.model_validate(crew.spec).placeholders())}


@router.post("/kickoff", response_model=KickoffAnswer, responses=_documented(404, 422, 503))
async def kickoff(
    crew_name: CrewName, body: KickoffBody, store: StoreDep, settings: SettingsDep, temporal: GatewayDep
) -> Any:
    canonical = json.dumps({"crew": crew_name, **body.model_dump(mode="json")}, sort_keys=True)
    try:
        execution, _ = await accept_execution(
            store=store,
            settings=settings,
            temporal=temporal,
            choice=CrewChoice(crew_name=crew_name),
            inputs=body.inputs,
            idempotency_key=None,
            request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
            webhooks=body.subscriptions(body.meta, box_of(settings)),
        )
    except ProblemError as problem:
        return _from_problem(problem)
    return {"kickoff_id": execution.id}


@router.get("/status/{kickoff_id}", response_model=StatusAnswer, responses=_documented(404))
async def status(
    crew_name: CrewName, kickoff_id: Annotated[str, Path(max_length=64)], store: StoreDep
) -> Any:
    execution = await _execution_of(store, crew_name, kickoff_id)
    if execution is None:
        return _error(404, "Execution not found", f"No execution found with ID: {kickoff_id}")
    return crewai_status(execution)


@router.post("/resume", response_model=ResumeAnswer, responses=_documented(400, 404, 422, 503))
async def resume(
    crew_name: CrewName, body: ResumeBody, store: StoreDep, settings: SettingsDep, client: ClientDep
) -> Any:
    execution = await _execution_of(store, crew_name, body.execution_id)
    if execution is None or body.task_id not in {t.name for t in execution.tasks}:
        return _error(404, "Not Found", "Execution ID or Task ID not found")
    request = FeedbackRequest(task=body.task_id, approve=body.is_approve, feedback=body.human_feedback)
    try:
        await send_update(execution, client, "submit_feedback", request, ExecutionStatus.AWAITING_FEEDBACK)
    except ProblemError as problem:
        return _from_problem(problem)
    subscriptions = body.subscriptions(None, box_of(settings))
    if subscriptions:  # CrewAI's clients name their webhooks again on every resume
        await asyncio.to_thread(store.replace_crewai_webhooks, execution.id, subscriptions)
    if body.is_approve:
        return {"status": "resumed", "message": "Execution resumed successfully"}
    return {"status": "retrying", "message": "Task will be retried with your feedback"}


async def _execution_of(store: StoreDep, crew_name: str, execution_id: str) -> Execution | None:
    execution = await asyncio.to_thread(store.get_execution, execution_id)
    return execution if execution is not None and execution.crew_name == crew_name else None


def crewai_status(e: Execution) -> dict[str, Any]:
    """An execution as CrewAI's ``GET /status/{kickoff_id}`` describes one."""
    elapsed = _seconds(e)
    tasks = list(e.tasks)
    if e.status in (ExecutionStatus.COMPLETED, ExecutionStatus.DEGRADED):
        done = [t for t in tasks if t.status in (TaskStatus.COMPLETED, TaskStatus.SKIPPED) and t.output]
        last = done[-1] if done else None
        return {
            "status": "completed",
            "state": "SUCCESS",
            "result": {
                "output": last.output if last else "",
                "tasks": [
                    {"task_id": t.name, "output": t.output, "agent": t.agent, "execution_time": _seconds(t)}
                    for t in done
                ],
            },
            "result_json": (last.output_data or {}).get("json_dict") if last else None,
            "execution_time": elapsed,
        }
    if e.status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        message = str((e.error or {}).get("message") or e.status)
        return {"status": "error", "state": "FAILED", "error": message, "execution_time": elapsed}
    # The execution waits once the workflow says so (the task's output is written a moment before).
    waiting = (
        next((t for t in tasks if t.status == TaskStatus.AWAITING_FEEDBACK), None)
        if e.status == ExecutionStatus.AWAITING_FEEDBACK
        else None
    )
    current = waiting or next((t for t in tasks if t.status not in _FINISHED), None)
    found: dict[str, Any] = {
        "status": "pending_human_input" if waiting else "running",
        "state": "PENDING_HUMAN_INPUT" if waiting else "RUNNING",
        "current_task": current.name if current else None,
        "progress": {"completed_tasks": sum(t.status in _FINISHED for t in tasks), "total_tasks": len(tasks)},
    }
    if waiting is not None:
        found["task_output"] = waiting.output
    return found


_FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.SKIPPED, TaskStatus.DEGRADED, TaskStatus.FAILED})


def _seconds(row: Any) -> float | None:
    start, end = row.started_at, row.finished_at
    return round((end - start).total_seconds(), 3) if start and end else None
