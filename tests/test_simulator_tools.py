"""The simulator's tools: the model calls tools (natively and in CrewAI's ReAct text), the tool
service answers and fails on script, and a real CrewAI agent gets through a tool round trip."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from backend.simulator.app import tool_result_text
from backend.simulator.replies import tool_call_id
from backend.simulator.schema_args import example_arguments, invalid_arguments, is_valid
from backend.simulator.script import FaultRule
from tests.support import SimulatorServer

# Before crewai is imported (as activities/crew_runner.py does): no telemetry, no version check.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")

import crewai  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

TASK = "Summarise the state of fusion power"
USER = {"role": "user", "content": f"\nCurrent Task: {TASK}\n\nThis is the expected criteria: facts"}
SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "limit": {"type": "integer"},
        "query": {"type": "string"},
        "ratio": {"type": "number"},
        "exact": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "filters": {"type": "object"},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "note": {"type": "string"},
    },
    "required": ["limit", "query", "ratio", "exact", "tags", "filters", "mode"],
    "additionalProperties": False,
}
OTHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"topic": {"type": "string"}},
    "required": ["topic"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "search", "description": "Search.", "parameters": SEARCH_SCHEMA},
    },
    {"type": "function", "function": {"name": "other", "description": "Other.", "parameters": OTHER_SCHEMA}},
]


def client(sim: SimulatorServer, agent: str = "x", timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url(agent), api_key="sk-test", max_retries=0, timeout=timeout)


def chat(
    sim: SimulatorServer,
    messages: list[Any],
    tools: list[Any] | None = None,
    agent: str = "x",
    headers: dict[str, str] | None = None,
) -> ChatCompletion:
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    return client(sim, agent).chat.completions.create(
        model="gpt-test", messages=messages, extra_headers=headers, **extra
    )


def tool_turn(completion: ChatCompletion, result: str) -> list[dict[str, Any]]:
    """The assistant's tool-call message and the tool's result, as CrewAI sends them back."""
    calls = completion.choices[0].message.tool_calls or []
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [c.model_dump(include={"id", "type", "function"}) for c in calls],
    }
    return [assistant, {"role": "tool", "tool_call_id": calls[0].id, "name": "search", "content": result}]


def only_call(completion: ChatCompletion) -> tuple[str, str, dict[str, Any]]:
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.content is None
    [call] = completion.choices[0].message.tool_calls or []
    assert call.type == "function"
    return call.id, call.function.name, json.loads(call.function.arguments)


def set_agent(sim: SimulatorServer, agent: str, **settings: Any) -> httpx.Response:
    return httpx.post(f"{sim.url}/_sim/agents/{agent}", json=settings, timeout=5)


def add_faults(sim: SimulatorServer, *rules: dict[str, Any]) -> None:
    httpx.post(f"{sim.url}/_sim/faults", json={"rules": list(rules)}, timeout=5).raise_for_status()


def call_tool(sim: SimulatorServer, name: str, args: Any, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(sim.tool_url(name), json=args, timeout=timeout)


def ceil4(chars: int) -> int:
    return math.ceil(chars / 4)


# --- native tool calling ------------------------------------------------------------------------


def test_native_tools_get_a_call_of_the_first_tool_then_a_final_answer_quoting_the_result(
    sim: SimulatorServer,
) -> None:
    first = chat(sim, [USER], TOOLS)

    call_id, name, args = only_call(first)
    assert name == "search"
    assert call_id == tool_call_id("x", TASK, 0)
    assert args == {
        "limit": 1,
        "query": f"x on: {TASK} (call 1)",
        "ratio": 1.0,
        "exact": True,
        "tags": [f"x on: {TASK} (call 1)"],  # one item: a list the reader can see
        "filters": {},
        "mode": "fast",
    }
    assert is_valid(SEARCH_SCHEMA, args)

    result = 'Fusion: ITER first plasma 2035; "net gain" at NIF in 2022.\nSecond line.'
    final = chat(sim, [USER, *tool_turn(first, result)], TOOLS)

    content = final.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"
    assert not final.choices[0].message.tool_calls
    assert content is not None
    assert content.startswith("Thought: I now can give a great answer\nFinal Answer: [x] findings ")
    assert content.endswith(f"after 1 tool call(s). The tool said: {result}")


def test_native_answers_are_deterministic_and_ids_differ_per_round(sim: SimulatorServer) -> None:
    headers = {"x-sim-tool-rounds": "2"}
    first = chat(sim, [USER], TOOLS, headers=headers)
    again = chat(sim, [USER], TOOLS, headers=headers)
    second = chat(sim, [USER, *tool_turn(first, "r1")], TOOLS, headers=headers)

    assert only_call(first) == only_call(again)
    assert only_call(second)[0] == tool_call_id("x", TASK, 1) != only_call(first)[0]
    assert only_call(second)[2]["query"] == f"x on: {TASK} (call 2)"


def test_final_answer_quotes_at_most_500_characters_of_the_last_result(sim: SimulatorServer) -> None:
    first = chat(sim, [USER], TOOLS)
    result = "".join(str(i % 10) for i in range(2000))

    content = chat(sim, [USER, *tool_turn(first, result)], TOOLS).choices[0].message.content

    assert content is not None
    assert content.endswith("The tool said: " + result[:500])


def test_tool_rounds_header_asks_for_more_rounds(sim: SimulatorServer) -> None:
    headers = {"x-sim-tool-rounds": "2"}
    messages: list[Any] = [USER]
    first = chat(sim, messages, TOOLS, headers=headers)
    messages += tool_turn(first, "first result")
    second = chat(sim, messages, TOOLS, headers=headers)
    messages += tool_turn(second, "second result")
    final = chat(sim, messages, TOOLS, headers=headers).choices[0].message.content

    assert only_call(second)[1] == "search"
    assert final is not None
    assert final.endswith("after 2 tool call(s). The tool said: second result")


def test_agent_setting_picks_the_tool_and_the_rounds_and_the_header_wins(sim: SimulatorServer) -> None:
    assert set_agent(sim, "x", tool_rounds=2, tool="other").status_code == 200
    messages: list[Any] = [USER]

    first = chat(sim, messages, TOOLS)
    messages += tool_turn(first, "about fusion")
    second = chat(sim, messages, TOOLS)
    header_one = chat(sim, messages, TOOLS, headers={"x-sim-tool-rounds": "1"})

    assert only_call(first)[1:] == ("other", {"topic": f"x on: {TASK} (call 1)"})
    assert only_call(second)[1] == "other"
    assert header_one.choices[0].finish_reason == "stop"
    # Another agent keeps the defaults.
    assert only_call(chat(sim, [USER], TOOLS, agent="y"))[1] == "search"


def test_zero_tool_rounds_answers_at_once_and_an_unlisted_tool_is_called_anyway(sim: SimulatorServer) -> None:
    plain = chat(sim, [USER], TOOLS, headers={"x-sim-tool-rounds": "0"}).choices[0].message.content
    set_agent(sim, "x", tool="frobnicate").raise_for_status()

    assert plain is not None and plain.startswith("Thought: I now can give a great answer\nFinal Answer: [x]")
    assert only_call(chat(sim, [USER], TOOLS))[1:] == ("frobnicate", {})


def test_invalid_rounds_header_is_a_400_and_not_recorded(sim: SimulatorServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(sim, [USER], TOOLS, headers={"x-sim-tool-rounds": "many"})

    assert "x-sim-tool-rounds" in str(caught.value)
    assert sim.calls() == []


def test_bad_arguments_setting_sends_invalid_arguments_first_then_valid_ones(sim: SimulatorServer) -> None:
    set_agent(sim, "x", bad_arguments=2).raise_for_status()
    messages: list[Any] = [USER]

    first = chat(sim, messages, TOOLS)
    messages += tool_turn(first, "Error executing tool: arguments validation failed")
    second = chat(sim, messages, TOOLS)
    messages += tool_turn(second, "Error executing tool: arguments validation failed again")
    third = chat(sim, messages, TOOLS)
    messages += tool_turn(third, "the real result")
    final = chat(sim, messages, TOOLS).choices[0].message.content
    new_conversation = chat(sim, [USER], TOOLS)

    # A string where an integer is required: the first required property.
    assert only_call(first)[2]["limit"] == "not-a-valid-value"
    assert not is_valid(SEARCH_SCHEMA, only_call(first)[2])
    assert not is_valid(SEARCH_SCHEMA, only_call(second)[2])
    assert is_valid(SEARCH_SCHEMA, only_call(third)[2])
    # Invalid calls are not rounds: the tool never ran.
    assert final is not None and final.endswith("after 3 tool call(s). The tool said: the real result")
    # "The first K tool calls of that agent": spent, so a new conversation gets valid arguments.
    assert is_valid(SEARCH_SCHEMA, only_call(new_conversation)[2])
    state = httpx.get(f"{sim.url}/_sim/agents/x", timeout=5).json()
    assert state == {
        "agent": "x",
        "tool_rounds": 1,
        "tool": None,
        "bad_arguments": 2,
        "bad_arguments_left": 0,
    }


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"tool_rounds": -1}, "tool_rounds must be a non-negative integer"),
        ({"bad_arguments": "2"}, "bad_arguments must be a non-negative integer"),
        ({"tool": 3}, "tool must be a tool name or null"),
        ({"rounds": 2}, "unknown agent settings ['rounds']"),
    ],
)
def test_agent_settings_route_rejects_bad_settings(
    sim: SimulatorServer, payload: dict[str, Any], detail: str
) -> None:
    response = set_agent(sim, "x", **payload)

    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


def test_agent_settings_are_read_back_and_cleared_by_heal(sim: SimulatorServer) -> None:
    posted = set_agent(sim, "x", tool_rounds=3, bad_arguments=1)
    httpx.post(f"{sim.url}/_sim/heal", timeout=5).raise_for_status()
    after_heal = httpx.get(f"{sim.url}/_sim/agents/x", timeout=5).json()

    assert posted.json() == {
        "agent": "x",
        "tool_rounds": 3,
        "tool": None,
        "bad_arguments": 1,
        "bad_arguments_left": 1,
    }
    assert after_heal == {
        "agent": "x",
        "tool_rounds": 1,
        "tool": None,
        "bad_arguments": 0,
        "bad_arguments_left": 0,
    }


# --- arguments from a JSON schema ---------------------------------------------------------------


def test_arguments_follow_strict_schemas_as_crewai_sends_them() -> None:
    # The shape CrewAI 1.15.30 sends for a pydantic args_schema with Optional, a nested model and a
    # constrained string (strict mode: every property is required).
    schema = {
        "type": "object",
        "properties": {
            "opt": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "nested": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
            "ref": {"$ref": "#/$defs/Ref"},
            "short": {"type": "string", "maxLength": 4},
            "when": {"type": "string", "format": "date"},
            "kind": {"const": "fixed"},
            "count": {"type": "integer", "minimum": 3},
        },
        "required": ["opt", "nested", "ref", "short", "when", "kind", "count"],
        "additionalProperties": False,
        "$defs": {
            "Ref": {"type": "object", "properties": {"flag": {"type": "boolean"}}, "required": ["flag"]}
        },
    }

    args = example_arguments(schema, "text")

    assert args == {
        "opt": 1,
        "nested": {"a": 1, "b": "text"},
        "ref": {"flag": True},
        "short": "text",
        "when": "2024-01-01",
        "kind": "fixed",
        "count": 3,
    }
    assert is_valid(schema, args)
    assert not is_valid(schema, {**args, "nested": {"a": 1}})
    assert not is_valid(schema, {**args, "extra": 1})
    assert not is_valid(schema, {**args, "opt": True})  # a bool is not an integer in JSON


@pytest.mark.parametrize(
    ("prop", "wrong"),
    [
        ({"type": "integer"}, {"p": "not-a-valid-value"}),
        ({"type": "string"}, {"p": 12345}),
        ({"type": "string", "enum": ["a", "b"]}, {"p": "not-a-valid-value"}),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {"p": "not-a-valid-value"}),
        ({}, {}),  # anything goes: the required property goes missing instead
    ],
)
def test_invalid_arguments_break_the_first_required_property(
    prop: dict[str, Any], wrong: dict[str, Any]
) -> None:
    schema = {"type": "object", "properties": {"p": prop, "q": {"type": "string"}}, "required": ["p", "q"]}

    args = invalid_arguments(schema, "text")

    assert args == {**wrong, "q": "text"}
    assert not is_valid(schema, args)


# --- ReAct text tools ---------------------------------------------------------------------------


def react_system(schema_text: str | None = None) -> dict[str, str]:
    """A system prompt in the form CrewAI 1.15.30 builds for a model without function calling."""
    lookup = (
        json.dumps({**SEARCH_SCHEMA, "title": "Search"}, indent=2) if schema_text is None else schema_text
    )
    return {
        "role": "system",
        "content": (
            "You are Researcher. A methodical researcher.\nYour personal goal is: find facts\n"
            "You ONLY have access to the following tools, and should NEVER make up tools that are not "
            f"listed here:\n\nTool Name: web search\nTool Arguments: {lookup}\nTool Description: Search.\n"
            f"Tool Name: other\nTool Arguments: {json.dumps(OTHER_SCHEMA, indent=2)}\nTool Description: Other.\n\n"
            "IMPORTANT: Use the following format in your response:\n\n```\n"
            "Thought: you should always think about what to do\n"
            "Action: the action to take, only one name of [web search, other], just the name, exactly as it's written.\n"
            'Action Input: the input to the action, just a simple JSON object, enclosed in curly braces, using " to '
            "wrap keys and values.\nObservation: the result of the action\n```\n\n"
            "Once all necessary information is gathered, return the following format:\n\n```\n"
            "Thought: I now know the final answer\nFinal Answer: the final answer to the original input question\n```"
        ),
    }


REACT_USER = {"role": "user", "content": USER["content"] + "\n\nBegin! ...\n\nThought:"}
POST_TOOL = {
    "role": "user",
    "content": "Analyze the tool result. If requirements are met, provide the Final Answer.",
}


def react_answer(sim: SimulatorServer, messages: list[Any], agent: str = "researcher") -> str:
    completion = chat(sim, messages, agent=agent)
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content
    assert content is not None
    return content


def action_input(answer: str) -> dict[str, Any]:
    head, _, raw = answer.partition("\nAction Input: ")
    assert head == "Thought: I should use a tool\nAction: web search"
    args: dict[str, Any] = json.loads(raw)
    return args


def test_react_prompt_gets_an_action_of_the_first_listed_tool_with_schema_arguments(
    sim: SimulatorServer,
) -> None:
    answer = react_answer(sim, [react_system(), REACT_USER])

    args = action_input(answer)
    assert args["query"] == f"researcher on: {TASK} (call 1)"
    assert is_valid(SEARCH_SCHEMA, args)
    assert sim.llm_calls()[0]["has_tools"] is False


def test_react_final_answer_quotes_the_observation_appended_to_the_assistant_text(
    sim: SimulatorServer,
) -> None:
    action = react_answer(sim, [react_system(), REACT_USER])
    turn = {"role": "assistant", "content": action + "\nObservation: ITER: first plasma in 2035"}

    final = react_answer(sim, [react_system(), REACT_USER, turn, POST_TOOL])

    assert final.startswith("Thought: I now can give a great answer\nFinal Answer: [researcher] findings ")
    assert final.endswith("after 1 tool call(s). The tool said: ITER: first plasma in 2035")


def test_react_observation_may_come_as_a_message_of_its_own(sim: SimulatorServer) -> None:
    action = react_answer(sim, [react_system(), REACT_USER])
    turn = [{"role": "assistant", "content": action}, {"role": "user", "content": "Observation: 42 reactors"}]

    assert react_answer(sim, [react_system(), REACT_USER, *turn]).endswith("The tool said: 42 reactors")


def test_react_rounds_and_bad_arguments_settings(sim: SimulatorServer) -> None:
    set_agent(sim, "researcher", tool_rounds=2, bad_arguments=1).raise_for_status()
    messages: list[Any] = [react_system(), REACT_USER]
    answers = []
    for observation in ("Error: the Action Input is not a valid key, value dictionary.", "first", "second"):
        answers.append(react_answer(sim, messages))
        messages += [
            {"role": "assistant", "content": f"{answers[-1]}\nObservation: {observation}"},
            POST_TOOL,
        ]
    final = react_answer(sim, messages)

    assert not is_valid(SEARCH_SCHEMA, action_input(answers[0]))
    assert is_valid(SEARCH_SCHEMA, action_input(answers[1]))
    assert action_input(answers[2])["query"].endswith("(call 3)")  # differs: CrewAI refuses repeats
    assert final.endswith("after 3 tool call(s). The tool said: second")


def test_react_tool_whose_schema_does_not_parse_gets_empty_arguments(sim: SimulatorServer) -> None:
    answer = react_answer(sim, [react_system(schema_text="{not json"), REACT_USER])

    assert action_input(answer) == {}


def test_prompt_without_a_tool_list_gets_the_plain_answer(sim: SimulatorServer) -> None:
    system = {"role": "system", "content": "You are Writer. Action Input: is mentioned but no tools are."}

    assert "(prompt " in react_answer(sim, [system, USER], agent="writer")


# --- usage --------------------------------------------------------------------------------------


def test_usage_is_a_quarter_of_the_characters_rounded_up(sim: SimulatorServer) -> None:
    plain = chat(sim, [{"role": "system", "content": "abc"}, USER])
    tool_call = chat(sim, [USER], TOOLS)
    with_none = [USER, *tool_turn(tool_call, "12345")]
    final = chat(sim, with_none, TOOLS)

    prompt = 3 + len(USER["content"])
    plain_text = plain.choices[0].message.content or ""
    assert plain.usage is not None
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (
        ceil4(prompt),
        ceil4(len(plain_text)),
    )
    assert plain.usage.total_tokens == ceil4(prompt) + ceil4(len(plain_text))

    [call] = tool_call.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert tool_call.usage is not None
    assert tool_call.usage.prompt_tokens == ceil4(len(USER["content"]))
    assert tool_call.usage.completion_tokens == ceil4(len(call.function.name + call.function.arguments))

    # The assistant's tool-call message has no content: only the user's and the tool's text count.
    assert final.usage is not None
    assert final.usage.prompt_tokens == ceil4(len(USER["content"]) + 5)
    assert final.usage.completion_tokens == ceil4(len(final.choices[0].message.content or ""))


# --- the tool service ---------------------------------------------------------------------------


def test_tool_service_answers_a_deterministic_result_for_the_canonical_arguments(
    sim: SimulatorServer,
) -> None:
    first = call_tool(sim, "search", {"q": "fusion", "n": 2})
    reordered = call_tool(sim, "search", {"n": 2, "q": "fusion"})
    other_args = call_tool(sim, "search", {"q": "fission", "n": 2})
    other_tool = call_tool(sim, "other", {"q": "fusion", "n": 2})

    assert first.status_code == 200
    assert first.json() == {
        "tool": "search",
        "result": tool_result_text("search", {"q": "fusion", "n": 2}),
        "args": {"q": "fusion", "n": 2},
    }
    assert first.json()["result"].startswith("[search] result ")
    assert reordered.json()["result"] == first.json()["result"]
    assert other_args.json()["result"] != first.json()["result"]
    assert other_tool.json()["result"] != first.json()["result"]
    assert [(c["kind"], c["tool"], c["args"], c["outcome"], c["status"]) for c in sim.tool_calls()][:2] == [
        ("tool", "search", '{"n":2,"q":"fusion"}', "ok", 200),
        ("tool", "search", '{"n":2,"q":"fusion"}', "ok", 200),
    ]


def test_tool_service_rejects_a_body_that_is_not_json(sim: SimulatorServer) -> None:
    response = httpx.post(sim.tool_url("search"), content=b"{nope", timeout=5)

    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]
    assert sim.calls() == []


@pytest.mark.parametrize(
    ("rule", "status", "error"),
    [
        ({"kind": "rate_limit"}, 429, "rate limit reached for tool search"),
        ({"kind": "auth"}, 401, "invalid api key"),
        ({"kind": "server_error"}, 503, "service unavailable"),
        ({"kind": "server_error", "status": 502}, 502, "service unavailable"),
        ({"kind": "quota"}, 429, "quota exceeded for tool search: check your plan and billing details"),
        (
            {"kind": "quota", "status": 402},
            402,
            "quota exceeded for tool search: check your plan and billing details",
        ),
        ({"kind": "bad_request"}, 400, "invalid arguments for tool search"),
        ({"kind": "bad_request", "message": "limit must be positive"}, 400, "limit must be positive"),
    ],
)
def test_tool_fault_kinds_answer_their_status_and_error(
    sim: SimulatorServer, rule: dict[str, Any], status: int, error: str
) -> None:
    add_faults(sim, {**rule, "tool": "search"})

    failed = call_tool(sim, "search", {"q": "x"})
    healthy = call_tool(sim, "search", {"q": "x"})

    assert failed.status_code == status
    assert failed.json() == {"error": error}
    assert healthy.status_code == 200
    assert [(c["outcome"], c["status"]) for c in sim.tool_calls("search")] == [
        (rule["kind"], status),
        ("ok", 200),
    ]


def test_tool_rate_limit_sends_retry_after_headers(sim: SimulatorServer) -> None:
    add_faults(
        sim,
        {"kind": "rate_limit", "tool": "search"},
        {"kind": "rate_limit", "tool": "search", "retry_after_s": 2.5},
    )

    default = call_tool(sim, "search", {})
    scripted = call_tool(sim, "search", {})

    assert (default.headers["retry-after"], default.headers["retry-after-ms"]) == ("1", "1000")
    assert (scripted.headers["retry-after"], scripted.headers["retry-after-ms"]) == ("3", "2500")


def test_tool_malformed_fault_is_a_200_that_is_not_json(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "malformed", "tool": "*"})

    response = call_tool(sim, "search", {})

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_tool_reset_fault_is_a_connection_error_in_httpx(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "reset", "tool": "search"})

    with pytest.raises(httpx.RemoteProtocolError):
        call_tool(sim, "search", {"q": "x"})

    assert [(c["tool"], c["outcome"]) for c in sim.tool_calls()] == [("search", "reset")]


def test_tool_slow_fault_answers_after_its_delay_and_timeout_makes_the_client_give_up(
    sim: SimulatorServer,
) -> None:
    add_faults(
        sim,
        {"kind": "slow", "tool": "search", "delay_s": 0.01},
        {"kind": "timeout", "tool": "search", "delay_s": 3},
    )

    slow = call_tool(sim, "search", {"q": "x"})
    with pytest.raises(httpx.ReadTimeout):
        call_tool(sim, "search", {"q": "x"}, timeout=0.5)

    assert slow.json()["result"] == tool_result_text("search", {"q": "x"})
    assert [c["outcome"] for c in sim.tool_calls()] == ["slow", "timeout"]


def test_tool_rules_and_llm_rules_do_not_cross(sim: SimulatorServer) -> None:
    add_faults(
        sim, {"kind": "auth", "tool": "search", "count": None}, {"kind": "server_error", "count": None}
    )

    assert call_tool(sim, "search", {}).status_code == 401
    assert call_tool(sim, "other", {}).status_code == 200
    with pytest.raises(openai.InternalServerError):
        chat(sim, [USER])

    assert [(c["kind"], c["outcome"]) for c in sim.calls()] == [
        ("tool", "auth"),
        ("tool", "ok"),
        ("llm", "server_error"),
    ]


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        (
            {"kind": "context_length", "tool": "search"},
            "fault kinds ['context_length'] do not apply to tools",
        ),
        ({"kind": "huge", "tool": "*"}, "fault kinds ['huge'] do not apply to tools"),
    ],
)
def test_llm_only_fault_kinds_are_rejected_for_tools(
    sim: SimulatorServer, rule: dict[str, Any], detail: str
) -> None:
    response = httpx.post(f"{sim.url}/_sim/faults", json=rule, timeout=5)

    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


def test_bad_request_fault_on_the_llm_is_a_bad_request_error(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "bad_request"})

    with pytest.raises(openai.BadRequestError) as caught:
        chat(sim, [USER])

    assert caught.value.code == "invalid_request"


def test_tool_outage_spares_the_llm_and_other_tools(sim: SimulatorServer) -> None:
    response = httpx.post(f"{sim.url}/_sim/outage", json={"tool": "search", "duration_s": 30}, timeout=5)

    [outage] = response.json()["outages"]
    assert outage["tool"] == "search" and 29 < outage["remaining_s"] <= 30
    down = call_tool(sim, "search", {})
    assert (down.status_code, down.json()) == (503, {"error": "service outage"})
    assert call_tool(sim, "other", {}).status_code == 200
    assert chat(sim, [USER]).choices[0].finish_reason == "stop"


def test_every_tool_outage_and_llm_outage_are_independent(sim: SimulatorServer) -> None:
    httpx.post(f"{sim.url}/_sim/outage", json={"tool": "*"}, timeout=5).raise_for_status()
    assert call_tool(sim, "search", {}).status_code == 503
    assert call_tool(sim, "other", {}).status_code == 503
    assert chat(sim, [USER]).choices[0].finish_reason == "stop"

    sim.reset()
    httpx.post(f"{sim.url}/_sim/outage", json={"duration_s": 30}, timeout=5).raise_for_status()
    with pytest.raises(openai.InternalServerError):
        chat(sim, [USER])
    assert call_tool(sim, "search", {}).status_code == 200


# --- the request log ----------------------------------------------------------------------------


def test_request_log_filters_by_tool_by_agent_and_by_kind(sim: SimulatorServer) -> None:
    chat(sim, [USER], agent="a")
    call_tool(sim, "search", {"q": 1})
    chat(sim, [USER], agent="b")
    call_tool(sim, "other", {"q": 2})

    def log(**params: str) -> list[tuple[int, str, str, str | None]]:
        calls = httpx.get(f"{sim.url}/_sim/requests", params=params, timeout=5).json()["calls"]
        return [(c["seq"], c["kind"], c["agent"], c["tool"]) for c in calls]

    assert log(tool="search") == [(2, "tool", "", "search")]
    assert log(tool="*") == [(2, "tool", "", "search"), (4, "tool", "", "other")]
    assert log(agent="a") == [(1, "llm", "a", None)]
    assert log(kind="llm") == [(1, "llm", "a", None), (3, "llm", "b", None)]
    assert log(tool="nothing") == []
    assert [c["seq"] for c in sim.tool_calls()] == [2, 4]
    assert [c["seq"] for c in sim.tool_calls("other")] == [4]
    assert [c["seq"] for c in sim.llm_calls()] == [1, 3]
    assert [c["seq"] for c in sim.llm_calls("b")] == [3]


def test_llm_calls_record_their_prompt_and_whether_tools_were_offered(sim: SimulatorServer) -> None:
    system = {"role": "system", "content": "You are Researcher."}
    first = chat(sim, [system, USER], TOOLS, agent="r")
    chat(
        sim,
        [system, USER, *tool_turn(first, "Error executing tool: 503 from the search service")],
        TOOLS,
        agent="r",
    )
    chat(sim, [system, USER], agent="r")

    first_call, second_call, plain_call = sim.llm_calls("r")
    assert first_call["prompt"] == f"system: You are Researcher.\nuser: {USER['content']}"
    assert second_call["prompt"].endswith("tool: Error executing tool: 503 from the search service")
    assert "\n[tool call search {" in second_call["prompt"]
    assert (first_call["has_tools"], second_call["has_tools"], plain_call["has_tools"]) == (True, True, False)


def test_recorded_prompt_is_bounded_keeping_its_head_and_tail(sim: SimulatorServer) -> None:
    long = "A" * 30_000 + "the newest words"
    chat(sim, [{"role": "system", "content": "You are Researcher."}, {"role": "user", "content": long}])

    prompt = sim.llm_calls()[0]["prompt"]
    assert len(prompt) == 20_000
    assert prompt.startswith("system: You are Researcher.\nuser: AAA")
    assert prompt.endswith("the newest words")
    assert "characters left out" in prompt


# --- a real CrewAI agent ------------------------------------------------------------------------


class LookupArgs(BaseModel):
    query: str = Field(description="what to look up")
    limit: int


class SimLookup(BaseTool):
    """Calls the simulator's tool service, as a real tool calls its API."""

    name: str = "lookup"
    description: str = "Look facts up."
    args_schema: type[BaseModel] = LookupArgs
    url: str

    def _run(self, query: str, limit: int) -> str:
        response = httpx.post(self.url, json={"query": query, "limit": limit}, timeout=5)
        response.raise_for_status()
        return str(response.json()["result"])


def crewai_llm(sim: SimulatorServer, native: bool = True) -> Any:
    llm = crewai.LLM(model="gpt-4o-mini", base_url=f"{sim.url}/v1", api_key="x", max_retries=0)
    if native:
        return llm

    class TextToolsLLM(type(llm)):  # type: ignore[misc]
        """A model without function calling: CrewAI falls back to its ReAct text format."""

        def supports_function_calling(self) -> bool:
            return False

    return TextToolsLLM(model="gpt-4o-mini", base_url=f"{sim.url}/v1", api_key="x", max_retries=0)


def run_task(sim: SimulatorServer, native: bool = True) -> str:
    """One task of one agent with the lookup tool; CrewAI runs synchronously (no event loop here)."""
    agent = crewai.Agent(
        role="Researcher",
        goal="Find facts",
        backstory="A methodical researcher.",
        llm=crewai_llm(sim, native),
        tools=[SimLookup(url=sim.tool_url("lookup"))],
        max_retry_limit=0,
        verbose=False,
    )
    task = crewai.Task(description="Find facts about fusion power", expected_output="facts", agent=agent)
    return task.execute_sync(agent=agent).raw


def the_one_tool_result(sim: SimulatorServer) -> str:
    [call] = sim.tool_calls("lookup")
    assert call["outcome"] == "ok"
    return tool_result_text("lookup", json.loads(call["args"]))


def test_crewai_native_agent_calls_the_tool_once_and_its_output_quotes_the_result(
    sim: SimulatorServer,
) -> None:
    output = run_task(sim)

    result = the_one_tool_result(sim)
    assert json.loads(sim.tool_calls()[0]["args"]) == {
        "query": "researcher on: Find facts about fusion power (call 1)",
        "limit": 1,
    }
    # The native path keeps the model's text as it is, "Thought:" line included.
    assert output.startswith("Thought: I now can give a great answer\nFinal Answer: [researcher]")
    assert output.endswith(f"The tool said: {result}")
    llm_calls = sim.llm_calls("researcher")
    assert [c["has_tools"] for c in llm_calls] == [True, True]
    assert llm_calls[1]["prompt"].endswith(f"tool: {result}")
    assert [c["kind"] for c in sim.calls()] == ["llm", "tool", "llm"]


def test_crewai_react_agent_calls_the_tool_once_and_its_output_quotes_the_result(
    sim: SimulatorServer,
) -> None:
    output = run_task(sim, native=False)

    result = the_one_tool_result(sim)
    # The ReAct parser takes the text after "Final Answer:".
    assert output.startswith("[researcher] findings ")
    assert output.endswith(f"The tool said: {result}")
    llm_calls = sim.llm_calls("researcher")
    assert [c["has_tools"] for c in llm_calls] == [False, False]
    assert "Tool Name: lookup" in llm_calls[0]["prompt"]
    assert f"Observation: {result}" in llm_calls[1]["prompt"]


@pytest.mark.parametrize("native", [True, False], ids=["native", "react"])
def test_crewai_agent_is_told_its_arguments_were_invalid_and_corrects_itself(
    sim: SimulatorServer, native: bool
) -> None:
    set_agent(sim, "researcher", bad_arguments=1).raise_for_status()

    output = run_task(sim, native)

    # The invalid call never reached the tool: pydantic validation failed inside CrewAI.
    result = the_one_tool_result(sim)
    assert output.endswith(f"The tool said: {result}")
    first, second, third = sim.llm_calls("researcher")
    assert "validation failed" not in first["prompt"]
    assert "validation failed" in second["prompt"] and "Input should be a valid string" in second["prompt"]
    assert third["prompt"].count(result) == 1


def test_crewai_agent_sees_the_tool_services_error_in_its_next_prompt(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "server_error", "tool": "lookup"})

    output = run_task(sim)

    assert [(c["outcome"], c["status"]) for c in sim.tool_calls("lookup")] == [("server_error", 503)]
    second = sim.llm_calls("researcher")[1]["prompt"]
    assert "tool: Error executing tool: Server error '503 Service Unavailable'" in second
    assert "The tool said: Error executing tool: Server error '503 Service Unavailable'" in output


def test_a_tool_rule_can_target_the_calls_whose_arguments_contain_a_text(sim: SimulatorServer) -> None:
    sim.script.add_rules([FaultRule(kind="server_error", tool="lookup", args_contain="execution-b", count=1)])

    other = httpx.post(f"{sim.url}/tools/lookup", json={"query": "for execution-a"})
    targeted = httpx.post(f"{sim.url}/tools/lookup", json={"query": "for execution-b"})
    again = httpx.post(f"{sim.url}/tools/lookup", json={"query": "for execution-b"})

    assert [other.status_code, targeted.status_code, again.status_code] == [200, 503, 200]


def test_a_rule_can_let_the_first_calls_through(sim: SimulatorServer) -> None:
    sim.script.add_rules([FaultRule(kind="server_error", tool="lookup", after=2, count=1)])

    statuses = [httpx.post(f"{sim.url}/tools/lookup", json={"n": i}).status_code for i in range(4)]

    assert statuses == [200, 200, 503, 200]
