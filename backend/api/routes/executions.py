from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from backend.api.accept import CrewChoice, accept_execution
from backend.api.deps import ID_PATTERN, ClientDep, ExecutionDep, GatewayDep, SettingsDep, StoreDep
from backend.api.links import EXECUTION_LINKS, responds
from backend.api.problem_codes import PROBLEMS
from backend.api.problems import ProblemError, invalid_cursor
from backend.api.schemas import (
    ErrorRecordPublic,
    ExecutionCreate,
    ExecutionPublic,
    FeedbackBody,
    LogEntryPublic,
    Page,
    ResumeBody,
    SkipBody,
    StepPublic,
)
from backend.api.webhook_specs import box_of, subscription
from backend.db.models import Execution
from backend.exceptions.codes import Category
from backend.specs import NAME_PATTERN
from backend.status import TERMINAL_EXECUTION, ExecutionStatus
from workflows.contracts import FeedbackRequest, ResumeRequest, SkipRequest

router = APIRouter(prefix="/api/v1/executions", tags=["executions"])
_STATUSES = "|".join(s.value for s in ExecutionStatus)
_CATEGORIES = "|".join(c.value for c in Category)


def _request_hash(body: ExecutionCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=ExecutionPublic,
    operation_id="createExecution",
    responses={
        200: {"model": ExecutionPublic, "description": "Idempotent replay", "links": EXECUTION_LINKS},
        **responds(202, EXECUTION_LINKS),
    },
)
async def create_execution(
    body: ExecutionCreate,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    temporal: GatewayDep,
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> ExecutionPublic:
    execution, created = await accept_execution(
        store=store,
        settings=settings,
        temporal=temporal,
        choice=CrewChoice(spec=body.crew, crew_id=body.crew_id, crew_name=body.crew_name),
        inputs=body.inputs,
        idempotency_key=idempotency_key,
        request_hash=_request_hash(body),
        webhooks=[subscription(w, box_of(settings)) for w in body.webhook_list()],
    )
    response.status_code = 202 if created else 200
    return ExecutionPublic.of(execution, settings)


@router.get("", response_model=Page[ExecutionPublic])
async def list_executions(
    store: StoreDep,
    settings: SettingsDep,
    status: Annotated[str | None, Query(pattern=f"^({_STATUSES})$")] = None,
    crew_id: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    crew_name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    error_category: Annotated[str | None, Query(pattern=f"^({_CATEGORIES})$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[ExecutionPublic]:
    """Newest first; ``error_category`` keeps executions with at least one failed attempt of it."""
    try:
        page = await asyncio.to_thread(
            store.list_executions,
            status=status,
            crew_id=crew_id,
            crew_name=crew_name,
            error_category=error_category,
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[ExecutionPublic](
        items=[ExecutionPublic.of(e, settings, with_outputs=False) for e in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/{execution_id}", response_model=ExecutionPublic, operation_id="getExecution")
async def get_execution(execution: ExecutionDep, settings: SettingsDep) -> ExecutionPublic:
    return ExecutionPublic.of(execution, settings)


@router.post(
    "/{execution_id}/cancel", status_code=202, response_model=ExecutionPublic, operation_id="cancelExecution"
)
async def cancel_execution(
    execution: ExecutionDep, store: StoreDep, settings: SettingsDep, client: ClientDep
) -> ExecutionPublic:
    if execution.status in TERMINAL_EXECUTION:
        raise ProblemError("EXECUTION_TERMINAL", f"execution is already {execution.status}")
    try:
        await client.get_workflow_handle(execution.workflow_id).cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise ProblemError(
                "TEMPORAL_UNAVAILABLE", "Temporal did not take the cancellation", headers={"Retry-After": "5"}
            ) from exc
        # Never started (Temporal lost the start or it is still pending): cancel in the DB alone.
        await asyncio.to_thread(store.transition_execution, execution.id, ExecutionStatus.CANCELLED)
    await asyncio.to_thread(store.add_log, execution.id, "execution.cancel_requested", "via API")
    refreshed = await asyncio.to_thread(store.get_execution, execution.id)
    return ExecutionPublic.of(refreshed or execution, settings)


@router.get("/{execution_id}/logs", response_model=Page[LogEntryPublic], operation_id="executionLogs")
async def execution_logs(
    execution: ExecutionDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[LogEntryPublic]:
    try:
        page = await asyncio.to_thread(store.list_logs, execution.id, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[LogEntryPublic](
        items=[LogEntryPublic.of(x) for x in page.items], next_cursor=page.next_cursor
    )


@router.get("/{execution_id}/steps", response_model=Page[StepPublic], operation_id="executionSteps")
async def execution_steps(
    execution: ExecutionDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[StepPublic]:
    """Every LLM and tool call of the execution's attempts, in the order they were made: which,
    when, how long, tokens, cost, replayed from the journal or live, the error code of a failed one."""
    try:
        page = await asyncio.to_thread(store.list_steps, execution.id, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[StepPublic](items=[StepPublic.of(e) for e in page.items], next_cursor=page.next_cursor)


@router.get("/{execution_id}/errors", response_model=Page[ErrorRecordPublic], operation_id="executionErrors")
async def execution_errors(
    execution: ExecutionDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[ErrorRecordPublic]:
    """Every attempt-level error event of the execution, oldest first."""
    try:
        page = await asyncio.to_thread(store.list_error_events, execution.id, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[ErrorRecordPublic](
        items=[ErrorRecordPublic.of(e) for e in page.items], next_cursor=page.next_cursor
    )


UPDATE_TIMEOUT = timedelta(seconds=5)


async def send_update(
    execution: Execution,
    client: Client,
    update: str,
    request: ResumeRequest | SkipRequest | FeedbackRequest,
    waiting: str = ExecutionStatus.PAUSED,
) -> None:
    """Send a validated update: the workflow itself decides whether it waits for this (paused on
    that task, or awaiting feedback on it)."""
    refused = (
        "EXECUTION_NOT_PAUSED" if waiting == ExecutionStatus.PAUSED else "EXECUTION_NOT_AWAITING_FEEDBACK"
    )
    if execution.status in TERMINAL_EXECUTION:
        raise ProblemError("EXECUTION_TERMINAL", f"execution is already {execution.status}")
    if execution.status != waiting:
        # The workflow records the wait after it starts waiting, so a DB that does not say so
        # means it is not: refused here, without an update no worker may be there to take.
        raise ProblemError(refused, f"execution is {execution.status}, not {waiting}")
    handle = client.get_workflow_handle(execution.workflow_id)
    try:
        # A worker must run the update's validator; with none polling, give up instead of hanging.
        await handle.execute_update(update, request, rpc_timeout=UPDATE_TIMEOUT)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        code = cause.type if isinstance(cause, ApplicationError) and cause.type in PROBLEMS else refused
        raise ProblemError(code, str(cause.message if isinstance(cause, ApplicationError) else exc)) from exc
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise ProblemError(refused, "the execution's workflow is not running") from exc
        raise ProblemError(
            "TEMPORAL_UNAVAILABLE",
            "Temporal or its workers did not take the request in time",
            headers={"Retry-After": "5"},
        ) from exc


@router.post(
    "/{execution_id}/resume", status_code=202, response_model=ExecutionPublic, operation_id="resumeExecution"
)
async def resume_execution(
    execution: ExecutionDep,
    settings: SettingsDep,
    client: ClientDep,
    store: StoreDep,
    body: ResumeBody | None = None,
) -> ExecutionPublic:
    """Retry the paused task, optionally with an inputs patch or an LLM override."""
    body = body or ResumeBody()
    override = body.llm_override.model_dump(exclude_none=True) if body.llm_override else None
    await send_update(
        execution,
        client,
        "resume_execution",
        ResumeRequest(task=body.task, inputs_patch=body.inputs_patch, llm_override=override),
    )
    await asyncio.to_thread(
        store.add_log,
        execution.id,
        "execution.resume_requested",
        "via API",
        data={"inputs_patch": sorted(body.inputs_patch), "llm_override": bool(override)},
    )
    refreshed = await asyncio.to_thread(store.get_execution, execution.id)
    return ExecutionPublic.of(refreshed or execution, settings)


@router.post("/{execution_id}/skip", status_code=202, response_model=ExecutionPublic, operation_id="skipTask")
async def skip_task(
    execution: ExecutionDep, settings: SettingsDep, client: ClientDep, store: StoreDep, body: SkipBody
) -> ExecutionPublic:
    """Mark the paused task skipped (with an optional stand-in output) and continue."""
    if body.task not in {t.name for t in execution.tasks}:
        raise ProblemError(
            "TASK_UNKNOWN",
            f"the crew has no task {body.task!r}",
            errors=[{"loc": ["task"], "msg": "unknown task", "type": "unknown"}],
        )
    await send_update(execution, client, "skip_task", SkipRequest(task=body.task, output=body.output))
    refreshed = await asyncio.to_thread(store.get_execution, execution.id)
    return ExecutionPublic.of(refreshed or execution, settings)


@router.post(
    "/{execution_id}/feedback", status_code=202, response_model=ExecutionPublic, operation_id="giveFeedback"
)
async def give_feedback(
    execution: ExecutionDep, settings: SettingsDep, client: ClientDep, store: StoreDep, body: FeedbackBody
) -> ExecutionPublic:
    """Approve a human_input task's output (the crew goes on) or reject it with feedback (the task
    runs again with it)."""
    if body.task not in {t.name for t in execution.tasks}:
        raise ProblemError(
            "TASK_UNKNOWN",
            f"the crew has no task {body.task!r}",
            errors=[{"loc": ["task"], "msg": "unknown task", "type": "unknown"}],
        )
    request = FeedbackRequest(
        task=body.task, approve=body.approve, feedback=body.feedback, revision=body.revision
    )
    await send_update(execution, client, "submit_feedback", request, ExecutionStatus.AWAITING_FEEDBACK)
    refreshed = await asyncio.to_thread(store.get_execution, execution.id)
    return ExecutionPublic.of(refreshed or execution, settings)
