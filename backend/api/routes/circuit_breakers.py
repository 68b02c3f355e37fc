from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request

from backend.api.problems import ProblemError
from backend.api.schemas import CircuitBreakerPublic
from backend.breaker import CircuitBreaker

router = APIRouter(prefix="/api/v1/circuit-breakers", tags=["circuit breakers"])


def _breaker(request: Request) -> CircuitBreaker:
    return request.app.state.breaker  # type: ignore[no-any-return]


@router.get("", response_model=list[CircuitBreakerPublic])
async def list_circuit_breakers(request: Request) -> list[CircuitBreakerPublic]:
    return [CircuitBreakerPublic.of(b) for b in await asyncio.to_thread(_breaker(request).states)]


@router.post("/{service}/reset", response_model=CircuitBreakerPublic)
async def reset_circuit_breaker(
    request: Request, service: Annotated[str, Path(max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")]
) -> CircuitBreakerPublic:
    breaker = _breaker(request)
    if not await asyncio.to_thread(breaker.reset, service):
        raise ProblemError("CIRCUIT_BREAKER_NOT_FOUND", f"no circuit breaker for {service!r}")
    state = await asyncio.to_thread(breaker.state, service)
    assert state is not None
    return CircuitBreakerPublic.of(state)
