"""OpenAPI links: how an id in one response feeds the next request (create -> get -> cancel/resume).

They document the workflow of the API for clients, and let schemathesis' stateful fuzzing chain
real requests instead of guessing ids (tests/test_api_fuzz.py)."""

from __future__ import annotations

from typing import Any


def _links(parameter: str, source: str, targets: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"operationId": operation, "parameters": {parameter: f"$response.body#/{source}"}}
        for name, operation in targets.items()
    }


EXECUTION_LINKS = _links(
    "execution_id",
    "id",
    {
        "GetExecution": "getExecution",
        "CancelExecution": "cancelExecution",
        "ResumeExecution": "resumeExecution",
        "SkipTask": "skipTask",
        "ExecutionLogs": "executionLogs",
        "ExecutionErrors": "executionErrors",
    },
)
CREW_LINKS = _links("crew_id", "id", {"GetCrew": "getCrew"}) | {
    "StartExecution": {"operationId": "createExecution", "requestBody": {"crew_id": "$response.body#/id"}}
}
DEAD_LETTER_LINKS = _links(
    "dead_letter_id",
    "id",
    {
        "GetDeadLetter": "getDeadLetter",
        "ReplayDeadLetter": "replayDeadLetter",
        "DiscardDeadLetter": "discardDeadLetter",
    },
)


def responds(
    status: int, links: dict[str, Any], description: str = "Successful Response"
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: FastAPI merges this into the route's own response."""
    return {status: {"description": description, "links": links}}
