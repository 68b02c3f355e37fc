"""Fingerprints of the requests a task's calls make, as the provider or the tool service sees
them, stable where CrewAI varies a request without changing its meaning.

What varies between two runs of the same task without changing what is asked (measured on
CrewAI 1.15: request bodies are byte-identical run to run except for these):

- ``inject_date``: ``Current Date: 2026-12-03`` at the end of the system prompt;
- tool-call ids: the provider's (``call_...``, random per live call) in an assistant message's
  ``tool_calls`` and in each tool result's ``tool_call_id``; they become their order of appearance;
- the ids of large tool results CrewAI stores as artifacts (``tool-result-<random>``);
- the order of the stop words (a set in CrewAI).

Everything else is part of the request: a changed input, a different earlier answer, a human's
feedback, a new tool: the fingerprint differs and replay ends there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

_DATE_LINE = re.compile(r"Current Date: [^\n]*")
_ARTIFACT = re.compile(r"tool-result-[A-Za-z0-9_\-]+")


def llm_fingerprint(
    model: str, messages: Any, tools: Any = None, response_model: Any = None, stop: Sequence[str] = ()
) -> str:
    ids: dict[str, str] = {}
    request = {
        "model": model,
        "messages": [_message(m, ids) for m in _as_messages(messages)],
        "tools": _canonical(tools),
        "response_model": _schema_of(response_model),
        "stop": sorted(stop),
    }
    return _digest(request)


def tool_fingerprint(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    return _digest({"tool": name, "args": _canonical(list(args)), "kwargs": _canonical(kwargs)})


def _as_messages(messages: Any) -> list[Any]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages or [])


def _message(message: Any, ids: dict[str, str]) -> Any:
    if not isinstance(message, dict):
        return _canonical(message)
    shaped: dict[str, Any] = {"role": message.get("role"), "content": _text(message.get("content"))}
    if message.get("name"):
        shaped["name"] = message["name"]
    if message.get("tool_call_id"):
        shaped["tool_call_id"] = _ordinal(str(message["tool_call_id"]), ids)
    calls = message.get("tool_calls")
    if calls:
        shaped["tool_calls"] = [_tool_call(call, ids) for call in calls]
    return shaped


def _tool_call(call: Any, ids: dict[str, str]) -> Any:
    data = call if isinstance(call, dict) else _canonical(call)
    if not isinstance(data, dict):
        return data
    function = data.get("function") or {}
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # arguments that are not JSON count as their text
            arguments = json.loads(arguments)
    name = function.get("name") if isinstance(function, dict) else data.get("name")
    return {"id": _ordinal(str(data.get("id", "")), ids), "name": name, "arguments": _canonical(arguments)}


def _ordinal(call_id: str, ids: dict[str, str]) -> str:
    return ids.setdefault(call_id, f"call-{len(ids) + 1}")


def _text(content: Any) -> Any:
    if isinstance(content, str):
        return _ARTIFACT.sub("tool-result-<id>", _DATE_LINE.sub("Current Date: <date>", content))
    return _canonical(content)


def _schema_of(model: Any) -> Any:
    schema = getattr(model, "model_json_schema", None)
    return schema() if callable(schema) else _canonical(model)


def _canonical(value: Any) -> Any:
    """Plain JSON data: pydantic models dumped, anything else by its repr (never a memory address)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _canonical(dump(mode="json"))
    return type(value).__name__


def _digest(request: Any) -> str:
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
