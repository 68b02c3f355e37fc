"""OpenAI-compatible LLM simulator, with a tool service (a test and demo tool, not a provider).

``POST /v1/chat/completions`` and ``POST /agents/{agent}/v1/chat/completions`` answer like OpenAI's
chat completions API, deterministically, in the ``Final Answer:`` form that CrewAI accepts. The
``/agents/{agent}`` prefix names the calling agent so faults can be scripted per agent; without it
the agent is the role CrewAI puts in the system prompt ("You are <role>.").

Tools (see :mod:`backend.simulator.replies`): a request with OpenAI ``tools`` gets ``tool_calls`` of
the first tool (arguments generated from its JSON schema) until enough tool results have come back,
then a final answer quoting the last result; a request whose prompt lists tools in CrewAI's ReAct
text format gets ``Action:`` / ``Action Input:`` answers the same way. The number of tool rounds is
1, or the agent's setting, or the ``x-sim-tool-rounds: N`` header of the request (which wins).

Usage figures depend on the text, so tests can compute expected token counts and costs::

    prompt_tokens     = ceil(P / 4)   P: characters of every message's content (text parts of a
                                         multi-part content; tool calls, names and roles not counted)
    completion_tokens = ceil(C / 4)   C: characters of the answer's content, or for a tool-call answer
                                         of each call's function name followed by its arguments JSON
    total_tokens      = prompt_tokens + completion_tokens

``POST /tools/{name}`` is a tool service: the JSON body is the tool's arguments, the answer
``{"tool": name, "result": tool_result_text(name, args), "args": args}``. Rules and outages with
``tool`` set fail it (429, 5xx, reset, slow/timeout, 401, quota, 400, malformed) and spare the LLM.

Control routes under ``/_sim`` script faults and read the request log:

- ``POST /_sim/faults``   ``{"rules": [FaultRule, ...]}`` or one rule: append rules
- ``POST /_sim/outage``   ``{"duration_s": 30, "agent": "*"}``: every LLM call gets 503 for a while;
  ``{"duration_s": 30, "tool": "name" | "*"}``: the tool service does, and the LLM is spared
- ``POST /_sim/agents/{agent}``  ``{"tool_rounds": 1, "tool": null, "bad_arguments": 0}``: how the
  agent uses tools (``bad_arguments``: its first K tool calls carry arguments that do not validate);
  ``GET`` reads them
- ``POST /_sim/heal``     clear rules, outages and agent settings
- ``GET  /_sim/state``    rules, outages, call count
- ``GET  /_sim/requests?agent=&tool=&kind=``   the request log (LLM calls with their prompt, tool
  calls with their arguments); ``DELETE`` clears it
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from backend.simulator.replies import Reply, ToolScript, prompt_text, reply, usage
from backend.simulator.script import (
    FAULT_KINDS,
    TOOL_FAULT_KINDS,
    AgentSettings,
    FaultRule,
    FaultScript,
    RecordedCall,
)

# CrewAI's system prompt: "You are <role>. <backstory>"; a role from YAML keeps its newline.
_ROLE_RE = re.compile(r"You are (.+?)\s*\.(?:\s|$)")
_TASK_RE = re.compile(r"Current Task:\s*(.+)")
_ROUNDS_HEADER = "x-sim-tool-rounds"
_SETTINGS_FIELDS = {"tool_rounds", "tool", "bad_arguments"}


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


def _completion(model: str, messages: list[dict[str, Any]], answer: Reply) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sim-" + hashlib.sha256(answer.completion_text().encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": answer.message(), "finish_reason": answer.finish_reason}],
        "usage": usage(messages, answer),
    }


def canonical_json(value: Any) -> str:
    """One text per value whatever the key order or spacing the client used."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tool_result_text(name: str, args: Any) -> str:
    """What the tool service answers for ``name`` called with ``args``: stable across runs."""
    digest = hashlib.sha256(f"{name}|{canonical_json(args)}".encode()).hexdigest()[:12]
    return f"[{name}] result {digest}"


def _error(status: int, message: str, type_: str, code: str | None, **headers: str) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _huge_completion(size: int) -> Response:
    """A well-formed completion whose answer is ``size`` bytes, built as bytes (no JSON encoder
    copies): reading it needs one allocation of that size in the client."""
    head = json.dumps(_completion("simulated", [], Reply("Final Answer: "))).encode()
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


def _retry_headers(rule: FaultRule) -> dict[str, str]:
    retry_after = rule.retry_after_s if rule.retry_after_s is not None else 1.0
    return {
        "retry-after": str(max(1, math.ceil(retry_after))),  # never earlier than the ms value
        "retry-after-ms": str(int(retry_after * 1000)),
        "x-ratelimit-reset-requests": f"{retry_after}s",
    }


def _fault_response(rule: FaultRule, api_key: str) -> Response:
    msg = (rule.message or "").replace("{api_key}", api_key)
    if rule.kind == "rate_limit":
        return _error(
            rule.status or 429,
            msg or "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
            **_retry_headers(rule),
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
        return _malformed()
    if rule.kind == "reset":
        return _ConnectionReset()
    if rule.kind == "huge":
        return _huge_completion(int((rule.size_mb or 64) * 1_000_000))
    if rule.kind == "bad_request":
        return _error(400, msg or "Invalid request.", "invalid_request_error", "invalid_request")
    # server_error (and outages)
    return _error(rule.status or 503, msg or "The server is overloaded.", "server_error", None)


def _malformed() -> Response:
    return Response("<html>upstream proxy error", status_code=200, media_type="application/json")


def _tool_fault_response(rule: FaultRule, tool: str, api_key: str) -> Response:
    """A tool service's failures: plain ``{"error": ...}`` bodies, as most HTTP APIs send them."""
    msg = (rule.message or "").replace("{api_key}", api_key)
    if rule.kind == "reset":
        return _ConnectionReset()
    if rule.kind == "malformed":
        return _malformed()
    status, default, headers = {
        "rate_limit": (429, f"rate limit reached for tool {tool}", _retry_headers(rule)),
        "auth": (401, "invalid api key", {}),
        "quota": (429, f"quota exceeded for tool {tool}: check your plan and billing details", {}),
        "bad_request": (400, f"invalid arguments for tool {tool}", {}),
    }.get(rule.kind, (503, "service unavailable", {}))  # server_error (and outages)
    return JSONResponse({"error": msg or default}, status_code=rule.status or status, headers=headers)


def _tool_rounds_header(request: Request) -> int | None:
    """The request's own number of tool rounds; ValueError if the header is not a count."""
    raw = request.headers.get(_ROUNDS_HEADER)
    if raw is None:
        return None
    rounds = int(raw)
    if rounds < 0:
        raise ValueError(raw)
    return rounds


def _tool_script(script: FaultScript, agent: str, header_rounds: int | None) -> ToolScript:
    settings = script.agent_settings(agent)
    return ToolScript(
        rounds=header_rounds if header_rounds is not None else settings.tool_rounds,
        tool=settings.tool,
        take_bad_arguments=lambda: script.take_bad_arguments(agent),
    )


def _settings_error(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "agent settings must be a JSON object"
    unknown = sorted(set(payload) - _SETTINGS_FIELDS)
    if unknown:
        return f"unknown agent settings {unknown}; known {sorted(_SETTINGS_FIELDS)}"
    for name in ("tool_rounds", "bad_arguments"):
        value = payload.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{name} must be a non-negative integer"
    if not isinstance(payload.get("tool"), str | None):
        return "tool must be a tool name or null"
    return None


def _rule_error(rules: list[FaultRule]) -> str | None:
    bad = [r.kind for r in rules if r.kind not in FAULT_KINDS]
    if bad:
        return f"unknown fault kinds {bad}; known {FAULT_KINDS}"
    not_for_tools = [r.kind for r in rules if r.tool is not None and r.kind not in TOOL_FAULT_KINDS]
    if not_for_tools:
        return f"fault kinds {not_for_tools} do not apply to tools; tool kinds {TOOL_FAULT_KINDS}"
    return None


def create_simulator_app(script: FaultScript | None = None) -> Starlette:
    script = script or FaultScript()

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
            messages = list(body.get("messages") or [])
            model = str(body.get("model") or "simulated")
            tools = body.get("tools")
            response_format = body.get("response_format")
        except (ValueError, AttributeError, TypeError):
            return _error(400, "request body is not a JSON chat request", "invalid_request_error", None)
        try:
            header_rounds = _tool_rounds_header(request)
        except ValueError:
            return _error(
                400, f"{_ROUNDS_HEADER} must be a non-negative integer", "invalid_request_error", None
            )
        agent = _agent_of(request, messages)
        hint = _task_hint(messages)
        api_key = request.headers.get("authorization", "").removeprefix("Bearer ")

        def record(outcome: str, status: int) -> RecordedCall:
            return script.record(agent, hint, outcome, status, prompt_text(messages), bool(tools))

        def completion(call: RecordedCall) -> JSONResponse:
            script_ = _tool_script(script, agent, header_rounds)
            answer = reply(messages, tools, agent, hint, script_, response_format)
            body = _completion(model, messages, answer)
            call.usage = body["usage"]  # what the provider bills, as it reports it
            return JSONResponse(body)

        rule = script.next_fault(agent)
        if rule is not None and rule.kind in ("slow", "timeout"):
            # Both answer correctly, late: "timeout" is just slow enough that the client gives up.
            # Recorded on arrival, so a call the client abandoned still counts as a call.
            call = record(rule.kind, 200)
            await asyncio.sleep(rule.delay_s if rule.delay_s is not None else 120.0)
            return completion(call)
        if rule is not None:
            response = _fault_response(rule, api_key)
            record(rule.kind, response.status_code)
            return response
        return completion(record("ok", 200))

    async def tool_service(request: Request) -> Response:
        name = str(request.path_params["name"])
        try:
            raw = await request.body()
            args = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return JSONResponse({"error": "the body is not JSON: send the tool's arguments"}, 400)
        api_key = request.headers.get("authorization", "").removeprefix("Bearer ")
        canonical = canonical_json(args)
        rule = script.next_tool_fault(name, canonical)
        if rule is not None and rule.kind in ("slow", "timeout"):
            script.record_tool(name, canonical, rule.kind, 200)  # on arrival, as for the LLM
            await asyncio.sleep(rule.delay_s if rule.delay_s is not None else 120.0)
        elif rule is not None:
            response = _tool_fault_response(rule, name, api_key)
            script.record_tool(name, canonical, rule.kind, response.status_code)
            return response
        else:
            script.record_tool(name, canonical, "ok", 200)
        return JSONResponse({"tool": name, "result": tool_result_text(name, args), "args": args})

    async def add_faults(request: Request) -> Response:
        payload = await request.json()
        raw_rules = payload.get("rules", [payload]) if isinstance(payload, dict) else payload
        try:
            rules = [FaultRule(**raw) for raw in raw_rules]
        except TypeError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        error = _rule_error(rules)
        if error:
            return JSONResponse({"detail": error}, 422)
        script.add_rules(rules)
        return JSONResponse(script.snapshot())

    async def outage(request: Request) -> Response:
        payload = await request.json()
        tool = payload.get("tool")
        script.start_outage(
            float(payload.get("duration_s", 30)),
            str(payload.get("agent", "*")),
            str(tool) if tool is not None else None,
        )
        return JSONResponse(script.snapshot())

    async def agent_settings(request: Request) -> Response:
        agent = str(request.path_params["agent"])
        if request.method == "POST":
            payload = await request.json()
            error = _settings_error(payload)
            if error:
                return JSONResponse({"detail": error}, status_code=422)
            script.set_agent(agent, AgentSettings(**payload))
        return JSONResponse({"agent": agent, **asdict(script.agent_settings(agent))})

    async def heal(request: Request) -> Response:
        script.heal()
        return JSONResponse(script.snapshot())

    async def state(request: Request) -> Response:
        return JSONResponse(script.snapshot())

    async def requests_log(request: Request) -> Response:
        if request.method == "DELETE":
            script.clear_calls()
            return JSONResponse({"calls": []})
        params = request.query_params
        return JSONResponse(
            {"calls": script.calls_as_dicts(params.get("agent"), params.get("tool"), params.get("kind"))}
        )

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "simulated", "object": "model"}]})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/agents/{agent}/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/tools/{name}", tool_service, methods=["POST"]),
            Route("/_sim/faults", add_faults, methods=["POST"]),
            Route("/_sim/outage", outage, methods=["POST"]),
            Route("/_sim/agents/{agent}", agent_settings, methods=["GET", "POST"]),
            Route("/_sim/heal", heal, methods=["POST"]),
            Route("/_sim/state", state),
            Route("/_sim/requests", requests_log, methods=["GET", "DELETE"]),
        ]
    )
    app.state.script = script
    return app
