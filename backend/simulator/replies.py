"""What the simulated model answers: a final answer, a native tool call, or a ReAct tool action.

The answer depends only on the conversation and the agent's script, never on hidden state (except
the agent's count of invalid-argument calls still to make), so a retried request is answered the
same way. Three cases:

- **Native tools** (the request carries OpenAI ``tools``): while fewer tool calls with valid
  arguments have got a result (a ``role: "tool"`` message) than the agent's tool rounds, answer one
  ``tool_calls`` entry for the scripted tool (default: the first offered); then a final answer.
- **ReAct text tools** (no ``tools``, but CrewAI's text tool list, "Tool Name:" lines and the
  "Action Input:" format, in a system or user message): the same rounds, answered as
  ``Action: <name>`` / ``Action Input: {json}``; a result is the text after ``Observation:``, which
  CrewAI appends to the assistant's own text (or may send as a message of its own).
- **No tools**: the plain final answer naming the agent, the task and the prompt size.

A final answer after tool results quotes the last result verbatim (at most 500 characters), so a
test can see the tool's answer reach the task's output.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backend.simulator.schema_args import Schema, example_arguments, invalid_arguments, is_valid

QUOTE_LIMIT = 500  # characters of the last tool result a final answer quotes
PROMPT_LIMIT = 20_000  # characters of a recorded prompt

Message = dict[str, Any]

_FINAL_THOUGHT = "Thought: I now can give a great answer\n"
_TOOL_NAME_RE = re.compile(r"^Tool Name:[ \t]*(.+?)[ \t]*$", re.M)
_TOOL_ARGS_RE = re.compile(r"\s*Tool Arguments:[ \t]*")
# CrewAI's own parser (agents/parser.py) uses the same shape.
_ACTION_RE = re.compile(r"Action\s*\d*\s*:[ \t]*(.*?)\s*Action\s*\d*\s*Input\s*\d*\s*:\s*(.*)", re.S)
_OBSERVATION_RE = re.compile(r"(?:^|\n)Observation:")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Reply:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def completion_text(self) -> str:
        """The text the completion tokens are counted from: the content, or each tool call's name
        followed by its arguments JSON."""
        if self.tool_calls:
            return "".join(call.name + call.arguments for call in self.tool_calls)
        return self.content or ""

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        return message


@dataclass(frozen=True)
class ToolScript:
    """How the calling agent uses tools (from its settings and the request's headers)."""

    rounds: int = 1
    tool: str | None = None
    take_bad_arguments: Callable[[], bool] = lambda: False  # consumes one invalid-arguments call


@dataclass(frozen=True)
class _ToolSpec:
    name: str
    schema: Schema | None  # None: not offered, so anything goes
    description: str = ""


@dataclass(frozen=True)
class _Round:
    """One tool call the model made earlier in this conversation."""

    tool: str
    valid: bool
    result: str | None = None  # None: no result has come back yet


def content_text(message: Message) -> str:
    """A message's text: plain content, or the text parts of a multi-part content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def prompt_text(messages: Sequence[Message], limit: int = PROMPT_LIMIT) -> str:
    """``role: content`` lines (tool calls shown inline), bounded by keeping the head and the tail:
    the newest messages (feedback, tool errors) are at the end and are what tests look for."""
    text = "\n".join(_prompt_line(m) for m in messages)
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} characters left out ...]\n"
    head = (limit - len(marker)) // 2
    return text[:head] + marker + text[len(text) - (limit - len(marker) - head) :]


def _prompt_line(message: Message) -> str:
    line = f"{message.get('role')}: {content_text(message)}"
    for call in message.get("tool_calls") or []:
        function = (call.get("function") if isinstance(call, dict) else None) or {}
        line += f"\n[tool call {function.get('name')} {function.get('arguments')}]"
    return line


def prompt_chars(messages: Sequence[Message]) -> int:
    return sum(len(content_text(m)) for m in messages)


def usage(messages: Sequence[Message], reply: Reply) -> dict[str, int]:
    prompt = -(-prompt_chars(messages) // 4)  # ceil without floats
    completion = -(-len(reply.completion_text()) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def plain_answer(agent: str, task_hint: str, chars: int) -> str:
    return (
        _FINAL_THOUGHT
        + f"Final Answer: [{agent}] findings {_digest(agent, task_hint)} for: {task_hint} (prompt {chars} chars)"
    )


def tool_call_id(agent: str, task_hint: str, index: int) -> str:
    """Deterministic, and different for each call of a conversation (CrewAI pairs results by id)."""
    return "call_" + hashlib.sha256(f"{agent}|{task_hint}|{index}".encode()).hexdigest()[:16]


def reply(
    messages: Sequence[Message],
    tools: Any,
    agent: str,
    task_hint: str,
    script: ToolScript,
    response_format: Any = None,
) -> Reply:
    structured = _json_schema(response_format)
    if structured is not None:
        # A structured output (OpenAI's json_schema response format, what CrewAI sends for
        # output_pydantic): an instance of the schema, its text fields naming agent and task.
        return Reply(json.dumps(example_arguments(structured, f"{agent} on {task_hint[:60]}")))
    native = _native_specs(tools)
    if native:
        return _tool_step(native, _native_rounds(messages, native), messages, agent, task_hint, script, True)
    react = _react_specs(messages)
    if react:
        return _tool_step(react, _react_rounds(messages, react), messages, agent, task_hint, script, False)
    return Reply(plain_answer(agent, task_hint, prompt_chars(messages)))


def _json_schema(response_format: Any) -> Schema | None:
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def _tool_step(
    specs: list[_ToolSpec],
    rounds: list[_Round],
    messages: Sequence[Message],
    agent: str,
    task_hint: str,
    script: ToolScript,
    native: bool,
) -> Reply:
    # Calls with invalid arguments do not count: the tool never ran, the agent was told and retries.
    done = sum(1 for r in rounds if r.valid and r.result is not None)
    if done >= script.rounds:
        return Reply(_final_answer(agent, task_hint, rounds, messages))
    spec = _chosen(specs, script.tool)
    # The round number makes each call's arguments differ: CrewAI refuses (ReAct) or eventually
    # fails (native, 5th time) a call that repeats the previous one exactly.
    text = f"{agent} on: {task_hint} (call {len(rounds) + 1})"
    make = invalid_arguments if script.take_bad_arguments() else example_arguments
    generated = make(spec.schema, text) if spec.schema is not None else {}
    coworker = _first_coworker(spec.description)
    if coworker and isinstance(generated.get("coworker"), str):
        generated["coworker"] = coworker  # a manager delegates to someone who exists
    arguments = json.dumps(generated)
    if native:
        return Reply(None, (ToolCall(tool_call_id(agent, task_hint, len(rounds)), spec.name, arguments),))
    return Reply(f"Thought: I should use a tool\nAction: {spec.name}\nAction Input: {arguments}")


def _final_answer(agent: str, task_hint: str, rounds: list[_Round], messages: Sequence[Message]) -> str:
    results = [r.result for r in rounds if r.result is not None]
    if not results:  # tool_rounds 0: answer without using a tool
        return plain_answer(agent, task_hint, prompt_chars(messages))
    return _FINAL_THOUGHT + (
        f"Final Answer: [{agent}] findings {_digest(agent, task_hint)} for: {task_hint} "
        f"after {len(results)} tool call(s). The tool said: {results[-1][:QUOTE_LIMIT]}"
    )


_COWORKERS_RE = re.compile(r"following coworkers:\s*(.+?)\s*(?:\nThe input|$)", re.S)


def _first_coworker(description: str) -> str | None:
    """CrewAI's delegation tools list the coworkers in their description ("... one of the
    following coworkers: Researcher, Analyst")."""
    found = _COWORKERS_RE.search(description)
    if not found:
        return None
    first = found.group(1).split(",")[0].strip()
    return first or None


def _chosen(specs: list[_ToolSpec], name: str | None) -> _ToolSpec:
    if name is None:
        return specs[0]
    # A scripted tool that is not offered is called anyway: tests can see how CrewAI handles it.
    return next((s for s in specs if s.name == name), _ToolSpec(name, None))


# --- native tool calling ------------------------------------------------------------------------


def _native_specs(tools: Any) -> list[_ToolSpec]:
    specs = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            parameters = function.get("parameters")
            schema = parameters if isinstance(parameters, dict) else {}
            specs.append(_ToolSpec(str(function["name"]), schema, str(function.get("description") or "")))
    return specs


def _native_rounds(messages: Sequence[Message], specs: list[_ToolSpec]) -> list[_Round]:
    schemas = {s.name: s.schema for s in specs}
    rounds: list[_Round] = []
    for message in messages:
        calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
        if message.get("role") == "assistant" and calls:
            valid = all(_native_call_valid(c, schemas) for c in calls)
            rounds.append(_Round(str((calls[0].get("function") or {}).get("name")), valid))
        elif message.get("role") == "tool" and rounds:
            # Several calls in one round: the last result is the one quoted.
            rounds[-1] = replace(rounds[-1], result=content_text(message))
    return rounds


def _native_call_valid(call: dict[str, Any], schemas: dict[str, Schema | None]) -> bool:
    function = call.get("function") or {}
    args = _json_object(str(function.get("arguments") or ""))
    if args is None:
        return False
    schema = schemas.get(str(function.get("name")))
    return schema is None or is_valid(schema, args)


# --- ReAct text tools ---------------------------------------------------------------------------


def _react_specs(messages: Sequence[Message]) -> list[_ToolSpec]:
    """The tools CrewAI lists in the prompt: "Tool Name: x" then "Tool Arguments: {json schema}"."""
    for message in messages:
        if message.get("role") not in ("system", "user"):
            continue
        text = content_text(message)
        if "Action Input:" not in text or "Tool Name:" not in text:
            continue
        specs: dict[str, Schema | None] = {}
        for found in _TOOL_NAME_RE.finditer(text):
            specs.setdefault(found.group(1), _schema_after(text, found.end()))
        return [_ToolSpec(name, schema if schema is not None else {}) for name, schema in specs.items()]
    return []


def _schema_after(text: str, position: int) -> Schema | None:
    found = _TOOL_ARGS_RE.match(text, position)
    if not found:
        return None
    try:
        schema, _ = _DECODER.raw_decode(text, found.end())
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def _react_rounds(messages: Sequence[Message], specs: list[_ToolSpec]) -> list[_Round]:
    schemas = {s.name: s.schema for s in specs}
    rounds: list[_Round] = []
    for message in messages:
        if message.get("role") == "system":
            continue
        text = content_text(message)
        split = _OBSERVATION_RE.search(text)
        action = _ACTION_RE.search(text[: split.start()] if split else text)
        observation = text[split.end() :].strip() if split else None
        if message.get("role") == "assistant" and action:
            name = action.group(1).strip()
            rounds.append(_Round(name, _react_args_valid(action.group(2), schemas.get(name)), observation))
        elif rounds and rounds[-1].result is None and text.lstrip().startswith("Observation:"):
            rounds[-1] = replace(rounds[-1], result=observation)
    return rounds


def _react_args_valid(raw: str, schema: Schema | None) -> bool:
    args = _json_object(raw)
    return args is not None and (schema is None or is_valid(schema, args))


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value, _ = _DECODER.raw_decode(text.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _digest(agent: str, task_hint: str) -> str:
    return hashlib.sha256(f"{agent}|{task_hint}".encode()).hexdigest()[:10]
