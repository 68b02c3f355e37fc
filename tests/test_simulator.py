"""The LLM simulator answers like OpenAI and fails like OpenAI, as the real SDK sees it."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from backend.simulator.script import FaultRule, FaultScript
from tests.support import SimulatorServer

TASK_PROMPT = "Current Task: Summarise the state of fusion power"


def client(sim: SimulatorServer, agent: str = "x", timeout: float = 2.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url(agent), api_key="sk-test", max_retries=0, timeout=timeout)


def ask(llm: openai.OpenAI, prompt: str = TASK_PROMPT, system: str | None = None) -> ChatCompletion:
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return llm.chat.completions.create(model="gpt-test", messages=messages)


def answer(llm: openai.OpenAI, prompt: str = TASK_PROMPT, system: str | None = None) -> str:
    content = ask(llm, prompt, system).choices[0].message.content
    assert content is not None
    return content


def add_faults(sim: SimulatorServer, *rules: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{sim.url}/_sim/faults", json={"rules": list(rules)}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def outcomes(sim: SimulatorServer, agent: str | None = None) -> list[tuple[str, str, int]]:
    return [(c["agent"], c["outcome"], c["status"]) for c in sim.calls(agent)]


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- healthy answers ----------------------------------------------------------------------------


def test_healthy_answer_is_a_crewai_final_answer_naming_agent_and_task(sim: SimulatorServer) -> None:
    completion = ask(client(sim, "researcher"))

    content = completion.choices[0].message.content
    assert content is not None
    assert content.startswith("Thought: I now can give a great answer\nFinal Answer: [researcher] findings ")
    assert content.endswith(f"for: Summarise the state of fusion power (prompt {len(TASK_PROMPT)} chars)")
    assert completion.model == "gpt-test"
    assert completion.choices[0].finish_reason == "stop"
    assert outcomes(sim) == [("researcher", "ok", 200)]
    assert sim.calls()[0]["task_hint"] == "Summarise the state of fusion power"


def test_healthy_answer_is_deterministic_for_the_same_agent_and_prompt(sim: SimulatorServer) -> None:
    first = answer(client(sim, "researcher"))
    second = answer(client(sim, "researcher"))
    other_agent = answer(client(sim, "writer"))
    other_prompt = answer(client(sim, "researcher"), "Current Task: Something else")

    assert first == second
    assert other_agent != first
    assert other_prompt != first
    assert "Final Answer:" in other_agent


def test_models_route_lists_the_simulated_model(sim: SimulatorServer) -> None:
    llm = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test", max_retries=0, timeout=2)

    assert [m.id for m in llm.models.list()] == ["simulated"]


def test_request_body_that_is_not_json_gets_400(sim: SimulatorServer) -> None:
    response = httpx.post(f"{sim.base_url('x')}/chat/completions", content=b"not json", timeout=5)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "request body is not a JSON chat request"
    assert sim.calls() == []


# --- fault kinds, as the OpenAI SDK raises them -------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "exc_class", "status", "code"),
    [
        ({"kind": "rate_limit"}, openai.RateLimitError, 429, "rate_limit_exceeded"),
        ({"kind": "quota"}, openai.RateLimitError, 429, "insufficient_quota"),
        ({"kind": "auth"}, openai.AuthenticationError, 401, "invalid_api_key"),
        ({"kind": "context_length"}, openai.BadRequestError, 400, "context_length_exceeded"),
        ({"kind": "content_policy"}, openai.BadRequestError, 400, "content_policy_violation"),
        ({"kind": "server_error"}, openai.InternalServerError, 503, None),
        ({"kind": "server_error", "status": 502}, openai.InternalServerError, 502, None),
        ({"kind": "server_error", "status": 500}, openai.InternalServerError, 500, None),
    ],
)
def test_fault_kind_raises_the_real_sdk_exception(
    sim: SimulatorServer,
    rule: dict[str, Any],
    exc_class: type[openai.APIStatusError],
    status: int,
    code: str | None,
) -> None:
    add_faults(sim, rule)

    with pytest.raises(openai.APIStatusError) as caught:
        ask(client(sim))

    assert type(caught.value) is exc_class
    assert caught.value.status_code == status
    assert caught.value.response.status_code == status
    assert caught.value.code == code
    assert outcomes(sim) == [("x", rule["kind"], status)]


def test_rate_limit_fault_sends_retry_after_headers(sim: SimulatorServer) -> None:
    add_faults(
        sim,
        {"kind": "rate_limit"},
        {"kind": "rate_limit", "retry_after_s": 3.0},
        {"kind": "rate_limit", "retry_after_s": 2.5},
    )
    llm = client(sim)

    with pytest.raises(openai.RateLimitError) as default:
        ask(llm)
    with pytest.raises(openai.RateLimitError) as scripted:
        ask(llm)

    assert default.value.response.headers["retry-after"] == "1"
    assert default.value.response.headers["retry-after-ms"] == "1000"
    assert scripted.value.response.headers["retry-after"] == "3"
    assert scripted.value.response.headers["retry-after-ms"] == "3000"
    assert scripted.value.response.headers["x-ratelimit-reset-requests"] == "3.0s"
    with pytest.raises(openai.RateLimitError) as fractional:
        ask(llm)
    # Whole seconds round up: Retry-After never says "earlier" than retry-after-ms.
    assert fractional.value.response.headers["retry-after"] == "3"
    assert fractional.value.response.headers["retry-after-ms"] == "2500"


def test_quota_fault_is_a_rate_limit_error_with_insufficient_quota_code(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "quota"})

    with pytest.raises(openai.RateLimitError) as caught:
        ask(client(sim))

    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert "retry-after" not in caught.value.response.headers


def test_fault_message_can_quote_the_callers_api_key(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "auth", "message": "Incorrect API key provided: {api_key}."})

    with pytest.raises(openai.AuthenticationError) as caught:
        ask(client(sim))

    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "Incorrect API key provided: sk-test."


def test_reset_fault_is_a_connection_error(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "reset"})

    with pytest.raises(openai.APIConnectionError) as caught:
        ask(client(sim))

    assert type(caught.value) is openai.APIConnectionError
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert outcomes(sim) == [("x", "reset", 200)]


def test_malformed_fault_makes_the_sdk_raise_a_json_decode_error(sim: SimulatorServer) -> None:
    # The OpenAI SDK does not wrap this one: a 200 whose JSON body does not parse surfaces as the
    # stdlib's JSONDecodeError, not as an openai.APIError.
    add_faults(sim, {"kind": "malformed"})

    with pytest.raises(json.JSONDecodeError) as caught:
        ask(client(sim))

    assert not isinstance(caught.value, openai.OpenAIError)
    assert outcomes(sim) == [("x", "malformed", 200)]


def test_timeout_fault_makes_the_client_time_out_and_is_still_recorded(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "timeout", "delay_s": 3})

    with pytest.raises(openai.APITimeoutError):
        ask(client(sim, timeout=1))

    assert outcomes(sim) == [("x", "timeout", 200)]
    assert sim.calls()[0]["task_hint"] == "Summarise the state of fusion power"


def test_slow_fault_answers_correctly_after_its_delay(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "slow", "delay_s": 0.01})

    assert "Final Answer: [x] findings " in answer(client(sim))
    assert outcomes(sim) == [("x", "slow", 200)]


# --- how rules are consumed ---------------------------------------------------------------------


def test_fault_with_count_two_applies_exactly_twice_then_calls_are_healthy(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "rate_limit", "count": 2})
    llm = client(sim)

    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            ask(llm)
    assert "Final Answer:" in answer(llm)
    assert "Final Answer:" in answer(llm)

    assert [o for _, o, _ in outcomes(sim)] == ["rate_limit", "rate_limit", "ok", "ok"]


def test_rules_are_consumed_in_order(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "rate_limit"}, {"kind": "server_error", "status": 502})
    llm = client(sim)

    with pytest.raises(openai.RateLimitError):
        ask(llm)
    with pytest.raises(openai.InternalServerError):
        ask(llm)
    answer(llm)

    assert outcomes(sim) == [("x", "rate_limit", 429), ("x", "server_error", 502), ("x", "ok", 200)]


def test_rule_for_one_agent_does_not_affect_another(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "auth", "agent": "a", "count": None})

    assert "Final Answer: [b]" in answer(client(sim, "b"))
    with pytest.raises(openai.AuthenticationError):
        ask(client(sim, "a"))
    assert "Final Answer: [b]" in answer(client(sim, "b"))

    assert outcomes(sim) == [("b", "ok", 200), ("a", "auth", 401), ("b", "ok", 200)]
    assert outcomes(sim, "a") == [("a", "auth", 401)]


def test_rule_without_count_applies_until_healed(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "server_error", "count": None})
    llm = client(sim)

    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            ask(llm)
    healed = httpx.post(f"{sim.url}/_sim/heal", timeout=5)

    assert healed.status_code == 200
    assert healed.json()["rules"] == []
    assert "Final Answer:" in answer(llm)
    assert [o for _, o, _ in outcomes(sim)] == ["server_error"] * 3 + ["ok"]


def test_probability_rules_are_deterministic_for_a_seed() -> None:
    def sequence(seed: int) -> list[bool]:
        script = FaultScript(seed=seed)
        script.add_rules([FaultRule(kind="rate_limit", count=None, probability=0.5)])
        return [script.next_fault("a") is not None for _ in range(40)]

    coin = random.Random(7)
    expected = [coin.random() < 0.5 for _ in range(40)]

    assert sequence(7) == expected
    assert sequence(7) == sequence(7)
    assert sequence(8) != sequence(7)
    assert True in expected and False in expected


def test_probability_rule_with_count_is_consumed_only_when_it_fires() -> None:
    script = FaultScript(seed=3)
    script.add_rules([FaultRule(kind="server_error", count=2, probability=0.3)])

    fired = [script.next_fault("a") is not None for _ in range(50)]

    coin = random.Random(3)
    expected: list[bool] = []
    left = 2
    for _ in range(50):
        hit = left > 0 and coin.random() < 0.3
        left -= hit
        expected.append(hit)
    assert fired == expected
    assert fired.count(True) == 2


# --- outages ------------------------------------------------------------------------------------


def test_outage_makes_every_call_get_503(sim: SimulatorServer) -> None:
    response = httpx.post(f"{sim.url}/_sim/outage", json={"duration_s": 30}, timeout=5)

    assert response.status_code == 200
    [outage] = response.json()["outages"]
    assert outage["agent"] == "*"
    assert 29 < outage["remaining_s"] <= 30
    for agent in ("a", "b"):
        with pytest.raises(openai.InternalServerError) as caught:
            ask(client(sim, agent))
        assert caught.value.status_code == 503
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["message"] == "service outage"
    assert outcomes(sim) == [("a", "server_error", 503), ("b", "server_error", 503)]


def test_outage_of_one_agent_spares_the_others(sim: SimulatorServer) -> None:
    httpx.post(f"{sim.url}/_sim/outage", json={"duration_s": 30, "agent": "a"}, timeout=5).raise_for_status()

    with pytest.raises(openai.InternalServerError):
        ask(client(sim, "a"))
    assert "Final Answer: [b]" in answer(client(sim, "b"))


def test_outage_ends_when_its_duration_has_passed() -> None:
    clock = FakeClock(100.0)
    script = FaultScript(clock=clock)
    script.start_outage(10.0)

    fault = script.next_fault("a")
    assert fault is not None
    assert (fault.kind, fault.status, fault.message) == ("server_error", 503, "service outage")
    clock.now = 106.0
    assert script.snapshot()["outages"] == [{"agent": "*", "remaining_s": 4.0}]
    clock.now = 109.999
    assert script.next_fault("a") is not None
    clock.now = 110.0
    assert script.next_fault("a") is None
    assert script.snapshot()["outages"] == []
    assert script.outages == []


def test_outage_takes_precedence_over_rules_without_consuming_them() -> None:
    clock = FakeClock()
    script = FaultScript(clock=clock)
    script.add_rules([FaultRule(kind="auth")])
    script.start_outage(5.0)

    fault = script.next_fault("a")
    assert fault is not None and fault.kind == "server_error"
    clock.now = 5.0
    fault = script.next_fault("a")
    assert fault is not None and fault.kind == "auth"
    assert script.next_fault("a") is None


# --- control routes -----------------------------------------------------------------------------


def test_state_of_a_fresh_simulator_is_empty(sim: SimulatorServer) -> None:
    response = httpx.get(f"{sim.url}/_sim/state", timeout=5)

    assert response.status_code == 200
    assert response.json() == {"rules": [], "outages": [], "calls": 0}


def test_faults_route_accepts_one_bare_rule_and_returns_state_with_defaults(sim: SimulatorServer) -> None:
    response = httpx.post(f"{sim.url}/_sim/faults", json={"kind": "rate_limit", "agent": "a"}, timeout=5)

    assert response.status_code == 200
    assert response.json() == {
        "rules": [
            {
                "kind": "rate_limit",
                "agent": "a",
                "count": 1,
                "probability": 1.0,
                "status": None,
                "retry_after_s": None,
                "delay_s": None,
                "size_mb": None,
                "message": None,
                "tool": None,
                "args_contain": None,
                "after": 0,
            }
        ],
        "outages": [],
        "calls": 0,
    }


def test_state_lists_only_rules_that_are_not_exhausted_and_counts_calls(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "rate_limit"}, {"kind": "auth", "count": 2})
    with pytest.raises(openai.RateLimitError):
        ask(client(sim))

    state = httpx.get(f"{sim.url}/_sim/state", timeout=5).json()

    assert [(r["kind"], r["count"]) for r in state["rules"]] == [("auth", 2)]
    assert state["calls"] == 1


@pytest.mark.parametrize(
    ("payload", "detail_start"),
    [
        ({"kind": "explode"}, "unknown fault kinds ['explode']"),
        ({"rules": [{"kind": "rate_limit"}, {"kind": "meltdown"}]}, "unknown fault kinds ['meltdown']"),
        ({"kind": "rate_limit", "colour": "red"}, "FaultRule.__init__() got an unexpected keyword argument"),
    ],
)
def test_faults_route_rejects_bad_rules_with_422_and_adds_none(
    sim: SimulatorServer, payload: dict[str, Any], detail_start: str
) -> None:
    response = httpx.post(f"{sim.url}/_sim/faults", json=payload, timeout=5)

    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail_start)
    assert sim.script.snapshot()["rules"] == []


def test_requests_log_filters_by_agent_and_clears(sim: SimulatorServer) -> None:
    answer(client(sim, "a"), "Current Task: first")
    answer(client(sim, "b"), "Current Task: second")
    answer(client(sim, "a"), "Current Task: third")

    everything = httpx.get(f"{sim.url}/_sim/requests", timeout=5).json()["calls"]
    only_a = httpx.get(f"{sim.url}/_sim/requests", params={"agent": "a"}, timeout=5).json()["calls"]
    cleared = httpx.delete(f"{sim.url}/_sim/requests", timeout=5)
    after = httpx.get(f"{sim.url}/_sim/requests", timeout=5).json()["calls"]

    assert [(c["seq"], c["agent"], c["task_hint"]) for c in everything] == [
        (1, "a", "first"),
        (2, "b", "second"),
        (3, "a", "third"),
    ]
    assert [(c["seq"], c["task_hint"], c["outcome"], c["status"]) for c in only_a] == [
        (1, "first", "ok", 200),
        (3, "third", "ok", 200),
    ]
    assert cleared.status_code == 200
    assert cleared.json() == {"calls": []}
    assert after == []
    assert httpx.get(f"{sim.url}/_sim/requests", params={"agent": "nobody"}, timeout=5).json() == {
        "calls": []
    }


# --- agent identity -----------------------------------------------------------------------------


def test_agent_is_inferred_from_the_system_prompt_on_the_plain_path(sim: SimulatorServer) -> None:
    llm = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test", max_retries=0, timeout=2)
    system = "You are Senior Researcher. A methodical researcher.\nYour personal goal is: find facts"

    content = answer(llm, system=system)

    assert "Final Answer: [senior_researcher] findings " in content
    assert outcomes(sim) == [("senior_researcher", "ok", 200)]


def test_faults_scripted_for_an_inferred_agent_apply_on_the_plain_path(sim: SimulatorServer) -> None:
    add_faults(sim, {"kind": "context_length", "agent": "senior_researcher"})
    llm = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test", max_retries=0, timeout=2)

    with pytest.raises(openai.BadRequestError):
        ask(llm, system="You are Senior Researcher.")
    assert "[report_writer]" in answer(llm, system="You are Report Writer.")

    assert outcomes(sim) == [("senior_researcher", "context_length", 400), ("report_writer", "ok", 200)]


def test_agent_is_unknown_without_path_or_system_prompt(sim: SimulatorServer) -> None:
    llm = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-test", max_retries=0, timeout=2)

    assert "Final Answer: [unknown]" in answer(llm)
    assert outcomes(sim) == [("unknown", "ok", 200)]


def test_agent_in_the_path_wins_over_the_system_prompt(sim: SimulatorServer) -> None:
    assert "[writer]" in answer(client(sim, "writer"), system="You are Senior Researcher.")
    assert outcomes(sim) == [("writer", "ok", 200)]
