"""The problem codes: what the HTTP API answers a request it cannot serve with (RFC 9457
problem details, backend/api/problems.py). They describe the request, not a crew's failure:
no category, no retry policy, just the status and what the caller should do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemCode:
    code: str
    http_status: int
    description: str
    remedy: str

    @property
    def retryable(self) -> bool:
        """Worth asking again later (with Retry-After): a limit or a dependency that is down."""
        return self.http_status in (429, 503)


_p = ProblemCode
# fmt: off
_PROBLEMS: tuple[ProblemCode, ...] = (
    _p('REQUEST_INVALID',           422, 'The request body or parameters failed validation.', 'Fix the fields listed in `errors`.'),
    _p('REQUEST_MALFORMED',         400, 'The request body is not valid JSON (or not UTF-8).', 'Send a UTF-8 JSON body.'),
    _p('PAYLOAD_TOO_LARGE',         413, 'The request body exceeds the configured size limit.', 'Send a smaller body.'),
    _p('CREW_SPEC_INVALID',         422, 'The crew spec or the inputs it needs are invalid.', 'Fix the fields listed in `errors` (unknown agents, context cycles, missing inputs).'),
    _p('CREW_NAME_TAKEN',           409, 'A crew with this name already exists.', 'Choose another name or use the existing crew.'),
    _p('CREW_NOT_FOUND',            404, 'No crew has this id or name.', 'List crews with GET /api/v1/crews (Python crews appear once a worker carrying them has started).'),
    _p('TOOL_UNKNOWN',              422, "The crew spec names a tool no worker's registry has.", 'Use the names of GET /api/v1/tools, or register the tool on the workers (CREWRUN_TOOLS with a ref).'),
    _p('EXECUTION_NOT_AWAITING_FEEDBACK', 409, "The execution is not waiting for feedback on this task's output.", 'Read the execution: its status says what it waits for.'),
    _p('FEEDBACK_REVISION_STALE',   409, "The task's output was revised since the revision this decision is about.", 'Read the execution again and judge the output it shows now.'),
    _p('EXECUTION_NOT_FOUND',       404, 'No execution has this id.', 'List executions with GET /api/v1/executions.'),
    _p('EXECUTION_TERMINAL',        409, 'The execution has already finished; it cannot be changed.', 'Start a new execution (or replay its dead letter).'),
    _p('IDEMPOTENCY_KEY_REUSED',    409, 'This Idempotency-Key was already used with a different request body.', 'Use a new key for a different request.'),
    _p('DEAD_LETTER_NOT_FOUND',     404, 'No dead letter has this id.', 'List them with GET /api/v1/dead-letters.'),
    _p('DEAD_LETTER_NOT_OPEN',      409, 'The dead letter was already replayed or discarded.', 'See replayed_execution_id.'),
    _p('CIRCUIT_BREAKER_NOT_FOUND', 404, 'No circuit breaker exists for this service yet.', 'List them with GET /api/v1/circuit-breakers.'),
    _p('UNAUTHORIZED',              401, 'No valid API key: every route but /health needs Authorization: Bearer <key>.', 'Send a key from CREWRUN_API_KEYS / CREWRUN_API_KEY_HASHES.'),
    _p('API_RATE_LIMITED',          429, 'Too many requests for this API key.', 'Wait for Retry-After seconds.'),
    _p('NOT_FOUND',                 404, 'No such route.', 'See /docs for the routes.'),
    _p('METHOD_NOT_ALLOWED',        405, 'This route does not accept this method.', 'See /docs for the routes.'),
    _p('DATABASE_UNAVAILABLE',      503, 'The backend database is unreachable or locked.', 'Retry after the Retry-After delay.'),
    _p('TEMPORAL_UNAVAILABLE',      503, 'The Temporal server is unreachable.', 'Retry after the Retry-After delay.'),
    _p('INTERNAL_ERROR',            500, 'An unexpected error inside crewrun (in a task: an unclassified exception).', 'Report it with the `instance` value or the execution id.'),
    _p('EXECUTION_NOT_PAUSED',      409, 'The execution is not paused (or is paused on another task).', "Resume and skip apply to a paused execution's paused task."),
    _p('TASK_UNKNOWN',              422, 'The crew has no task of this name.', 'Use a task name of the crew spec.'),
)
# fmt: on
del _p

PROBLEMS: dict[str, ProblemCode] = {entry.code: entry for entry in _PROBLEMS}


def problem(code: str) -> ProblemCode:
    """The entry of a problem code; an unknown one is a bug, so it raises KeyError."""
    return PROBLEMS[code]
