"""Accepting an execution: the one path from a request (crewrun's own, or CrewAI's kickoff) to a
row in the database and a workflow on Temporal, with its webhook subscriptions."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from temporalio.service import RPCError

from backend.api.deps import TemporalGateway
from backend.api.problems import ProblemError
from backend.api.routes.crews import check_tools
from backend.db.models import Execution
from backend.db.store import IdempotencyKeyReused, Store
from backend.db.webhooks import Subscription
from backend.executions import start_webhook_delivery, start_workflow
from backend.settings import Settings
from backend.specs import CrewSpec, missing_inputs


@dataclass(frozen=True)
class CrewChoice:
    """Exactly one: a JSON spec given inline, a registered crew's id, or its name."""

    spec: CrewSpec | None = None
    crew_id: str | None = None
    crew_name: str | None = None


async def resolve_crew(store: Store, choice: CrewChoice) -> tuple[CrewSpec, str | None]:
    if choice.spec is not None:
        await check_tools(store, choice.spec)
        return choice.spec, None
    if choice.crew_name is not None:
        crew = await asyncio.to_thread(store.crew_by_name, choice.crew_name)
    else:
        crew = await asyncio.to_thread(store.get_crew, choice.crew_id or "")
    if crew is None:
        raise ProblemError("CREW_NOT_FOUND", f"no crew {choice.crew_name or choice.crew_id!r}")
    return CrewSpec.model_validate(crew.spec), crew.id


def check_inputs(settings: Settings, spec: CrewSpec, inputs: dict[str, object]) -> None:
    if len(json.dumps(inputs)) > settings.max_inputs_bytes:
        raise ProblemError("PAYLOAD_TOO_LARGE", f"inputs exceed {settings.max_inputs_bytes} bytes")
    missing = missing_inputs(spec, dict(inputs))
    if missing:
        raise ProblemError(
            "CREW_SPEC_INVALID",
            f"inputs lack {len(missing)} placeholder value(s) the crew uses",
            errors=[
                {"loc": ["inputs", name], "msg": f"missing input for {{{name}}}", "type": "missing"}
                for name in missing
            ],
        )


async def accept_execution(
    *,
    store: Store,
    settings: Settings,
    temporal: TemporalGateway,
    choice: CrewChoice,
    inputs: dict[str, object],
    idempotency_key: str | None,
    request_hash: str,
    webhooks: list[Subscription],
) -> tuple[Execution, bool]:
    """Returns (the execution, whether this request created it)."""
    spec, crew_id = await resolve_crew(store, choice)
    check_inputs(settings, spec, inputs)
    try:
        execution, created = await asyncio.to_thread(
            store.create_execution,
            crew_id=crew_id,
            crew_name=spec.name,
            spec=spec.model_dump(mode="json"),
            inputs=dict(inputs),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            webhooks=webhooks,
        )
    except IdempotencyKeyReused as exc:
        raise ProblemError(
            "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with another body"
        ) from exc
    if execution.run_id is None:
        # A replayed key whose first start failed gets started now; USE_EXISTING makes a
        # concurrent double start return the same run.
        try:
            client = await temporal.client()
            if webhooks:
                await start_webhook_delivery(client, settings, execution.id)
            await start_workflow(client, settings, store, execution)
        except RPCError as exc:
            raise ProblemError(
                "TEMPORAL_UNAVAILABLE",
                "accepted, but Temporal did not take the start; retry with the same Idempotency-Key",
                headers={"Retry-After": "5"},
            ) from exc
        refreshed = await asyncio.to_thread(store.get_execution, execution.id)
        execution = refreshed or execution
    return execution, created
