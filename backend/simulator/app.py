"""OpenAI-compatible LLM simulator (a test and demo tool, not a provider).

``POST /v1/chat/completions`` and ``POST /agents/{agent}/v1/chat/completions`` answer like OpenAI's
chat completions API, deterministically, in the ``Final Answer:`` form that CrewAI accepts. The
``/agents/{agent}`` prefix names the calling agent so faults can be scripted per agent; without it
the agent is the role CrewAI puts in the system prompt ("You are <role>.").

Control routes under ``/_sim`` script faults and read the request log:

- ``POST /_sim/faults``   ``{"rules": [FaultRule, ...]}`` or one rule: append rules
- ``POST /_sim/outage``   ``{"duration_s": 30, "agent": "*"}``: every call gets 503 for a while
- ``POST /_sim/heal``     clear rules and outages
- ``GET  /_sim/state``    rules, outages, call count
- ``GET  /_sim/requests?agent=``   the request log; ``DELETE`` clears it
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from backend.simulator.script import FAULT_KINDS, FaultRule, FaultScript

_ROLE_RE = re.compile(r"You are (.+?)\.(?:\s|$)")
_TASK_RE = re.compile(r"Current Task:\s*(.+)")


def _agent_of(request: Request, messages: list[dict[str, Any]]) -> str:
    if "agent" in request.path_params:
        return str(request.path_params["agent"])
    for message in messages:
        if message.get("role") == "system":
            found = _ROLE_RE.search(str(message.get("content") or ""))
            if found:
                return found.group(1).strip().lower().replace(" ", "_")
    return "unknown"


def _task_hint(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user":
            content = str(message.get("content") or "")
            found = _TASK_RE.search(content)
            return (found.group(1) if found else content)[:120]
    return ""


def _answer(agent: str, task_hint: str, prompt_chars: int) -> str:
    digest = hashlib.sha256(f"{agent}|{task_hint}".encode()).hexdigest()[:10]
    return (
        "Thought: I now can give a great answer\n"
        f"Final Answer: [{agent}] findings {digest} for: {task_hint} "
        f"(prompt {prompt_chars} chars)"
    )


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sim-" + hashlib.sha256(content.encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def _error(status: int, message: str, type_: str, code: str | None, **headers: str) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _huge_completion(size: int) -> Response:
    """A well-formed completion whose answer is ``size`` bytes, built as bytes (no JSON encoder
    copies): reading it needs one allocation of that size in the client."""
    head = json.dumps(_completion("simulated", "Final Answer: ")).encode()
    marker = b'"Final Answer: "'
    before, after = head.split(marker)
    body = before + b'"Final Answer: ' + b"x" * size + b'"' + after
    return Response(body, status_code=200, media_type="application/json")


class _ConnectionReset(Response):
    """Promise a body, send one byte, then break: the client sees the peer drop the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ConnectionResetError("simulated connection reset")


def _fault_response(rule: FaultRule, api_key: str) -> Response:
    msg = (rule.message or "").replace("{api_key}", api_key)
    if rule.kind == "rate_limit":
        retry_after = rule.retry_after_s if rule.retry_after_s is not None else 1.0
        return _error(
            rule.status or 429,
            msg or "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
            **{
                "retry-after": str(max(1, math.ceil(retry_after))),  # never earlier than the ms value
                "retry-after-ms": str(int(retry_after * 1000)),
                "x-ratelimit-reset-requests": f"{retry_after}s",
            },
        )
    if rule.kind == "quota":
        return _error(
            429,
            msg or "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if rule.kind == "auth":
        return _error(
            401,
            msg or "Incorrect API key provided. You can find your API key in your account settings.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if rule.kind == "context_length":
        return _error(
            400,
            msg or "This model's maximum context length is 8192 tokens. Please reduce the length.",
            "invalid_request_error",
            "context_length_exceeded",
        )
    if rule.kind == "content_policy":
        return _error(
            400,
            msg or "Your request was rejected as a result of our safety system.",
            "invalid_request_error",
            "content_policy_violation",
        )
    if rule.kind == "malformed":
        return Response("<html>upstream proxy error", status_code=200, media_type="application/json")
    if rule.kind == "reset":
        return _ConnectionReset()
    if rule.kind == "huge":
        return _huge_completion(int((rule.size_mb or 64) * 1_000_000))
    # server_error (and outages)
    return _error(rule.status or 503, msg or "The server is overloaded.", "server_error", None)


def create_simulator_app(script: FaultScript | None = None) -> Starlette:
    script = script or FaultScript()

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
            messages = list(body.get("messages") or [])
            model = str(body.get("model") or "simulated")
        except (ValueError, AttributeError, TypeError):
            return _error(400, "request body is not a JSON chat request", "invalid_request_error", None)
        agent = _agent_of(request, messages)
        hint = _task_hint(messages)
        api_key = request.headers.get("authorization", "").removeprefix("Bearer ")
        rule = script.next_fault(agent)
        if rule is not None and rule.kind in ("slow", "timeout"):
            # Both answer correctly, late: "timeout" is just slow enough that the client gives up.
            # Recorded on arrival, so a call the client abandoned still counts as a call.
            script.record(agent, hint, rule.kind, 200)
            await asyncio.sleep(rule.delay_s if rule.delay_s is not None else 120.0)
            prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
            return JSONResponse(_completion(model, _answer(agent, hint, prompt_chars)))
        if rule is not None:
            response = _fault_response(rule, api_key)
            script.record(agent, hint, rule.kind, response.status_code)
            return response
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        script.record(agent, hint, "ok", 200)
        return JSONResponse(_completion(model, _answer(agent, hint, prompt_chars)))

    async def add_faults(request: Request) -> Response:
        payload = await request.json()
        raw_rules = payload.get("rules", [payload]) if isinstance(payload, dict) else payload
        try:
            rules = [FaultRule(**raw) for raw in raw_rules]
        except TypeError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        bad = [r.kind for r in rules if r.kind not in FAULT_KINDS]
        if bad:
            return JSONResponse({"detail": f"unknown fault kinds {bad}; known {FAULT_KINDS}"}, 422)
        script.add_rules(rules)
        return JSONResponse(script.snapshot())

    async def outage(request: Request) -> Response:
        payload = await request.json()
        script.start_outage(float(payload.get("duration_s", 30)), str(payload.get("agent", "*")))
        return JSONResponse(script.snapshot())

    async def heal(request: Request) -> Response:
        script.heal()
        return JSONResponse(script.snapshot())

    async def state(request: Request) -> Response:
        return JSONResponse(script.snapshot())

    async def requests_log(request: Request) -> Response:
        if request.method == "DELETE":
            script.clear_calls()
            return JSONResponse({"calls": []})
        return JSONResponse({"calls": script.calls_as_dicts(request.query_params.get("agent"))})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "simulated", "object": "model"}]})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/agents/{agent}/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/_sim/faults", add_faults, methods=["POST"]),
            Route("/_sim/outage", outage, methods=["POST"]),
            Route("/_sim/heal", heal, methods=["POST"]),
            Route("/_sim/state", state),
            Route("/_sim/requests", requests_log, methods=["GET", "DELETE"]),
        ]
    )
    app.state.script = script
    return app
