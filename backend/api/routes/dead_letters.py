from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Path, Query
from temporalio.service import RPCError

from backend.api.deps import ID_PATTERN, GatewayDep, SettingsDep, StoreDep
from backend.api.links import EXECUTION_LINKS, responds
from backend.api.problems import ProblemError, invalid_cursor
from backend.api.schemas import DeadLetterPublic, ExecutionPublic, Page, ReplayRequest
from backend.db.models import DeadLetter
from backend.db.store import DeadLetterNotOpen
from backend.executions import start_workflow
from backend.specs import CrewSpec, missing_inputs

router = APIRouter(prefix="/api/v1/dead-letters", tags=["dead letters"])
DeadLetterId = Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]


async def _letter(store: StoreDep, dead_letter_id: str) -> DeadLetter:
    found = await asyncio.to_thread(store.get_dead_letter, dead_letter_id)
    if found is None:
        raise ProblemError("DEAD_LETTER_NOT_FOUND", f"no dead letter {dead_letter_id!r}")
    return found


@router.get("", response_model=Page[DeadLetterPublic])
async def list_dead_letters(
    store: StoreDep,
    status: Annotated[str | None, Query(pattern="^(open|replayed|discarded)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[DeadLetterPublic]:
    try:
        page = await asyncio.to_thread(store.list_dead_letters, status=status, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[DeadLetterPublic](
        items=[DeadLetterPublic.of(d) for d in page.items], next_cursor=page.next_cursor
    )


@router.get("/{dead_letter_id}", response_model=DeadLetterPublic, operation_id="getDeadLetter")
async def get_dead_letter(store: StoreDep, dead_letter_id: DeadLetterId) -> DeadLetterPublic:
    return DeadLetterPublic.of(await _letter(store, dead_letter_id))


@router.post(
    "/{dead_letter_id}/replay",
    status_code=202,
    response_model=ExecutionPublic,
    operation_id="replayDeadLetter",
    responses=responds(202, EXECUTION_LINKS),
)
async def replay_dead_letter(
    store: StoreDep,
    settings: SettingsDep,
    temporal: GatewayDep,
    dead_letter_id: DeadLetterId,
    body: ReplayRequest | None = None,
) -> ExecutionPublic:
    """A new execution from the checkpoint: completed tasks are not run again."""
    letter = await _letter(store, dead_letter_id)
    patch = body.inputs_patch if body else {}
    if len(json.dumps(letter.inputs | patch)) > settings.max_inputs_bytes:
        raise ProblemError("PAYLOAD_TOO_LARGE", f"inputs exceed {settings.max_inputs_bytes} bytes")
    missing = missing_inputs(CrewSpec.model_validate(letter.spec), letter.inputs | patch)
    if missing:
        raise ProblemError(
            "CREW_SPEC_INVALID",
            "inputs lack placeholder values the crew uses",
            errors=[
                {"loc": ["inputs_patch", n], "msg": f"missing input for {{{n}}}", "type": "missing"}
                for n in missing
            ],
        )
    try:
        execution = await asyncio.to_thread(store.replay_dead_letter, dead_letter_id, patch)
    except DeadLetterNotOpen as exc:
        raise ProblemError("DEAD_LETTER_NOT_OPEN", f"dead letter is {exc.status}") from exc
    # Accepted in the DB first; if Temporal refuses now, the API's reconciler starts it later.
    with contextlib.suppress(ProblemError, RPCError):
        await start_workflow(await temporal.client(), settings, store, execution)
    refreshed = await asyncio.to_thread(store.get_execution, execution.id)
    return ExecutionPublic.of(refreshed or execution, settings)


@router.post("/{dead_letter_id}/discard", response_model=DeadLetterPublic, operation_id="discardDeadLetter")
async def discard_dead_letter(store: StoreDep, dead_letter_id: DeadLetterId) -> DeadLetterPublic:
    await _letter(store, dead_letter_id)
    try:
        letter = await asyncio.to_thread(store.discard_dead_letter, dead_letter_id)
    except DeadLetterNotOpen as exc:
        raise ProblemError("DEAD_LETTER_NOT_OPEN", f"dead letter is {exc.status}") from exc
    return DeadLetterPublic.of(letter)
