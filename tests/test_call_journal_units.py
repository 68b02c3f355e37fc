"""The call journal's parts on their own: fingerprints, the tape a retried attempt is served
from (on SQLite and PostgreSQL), matching, answers as JSON, bounds, redaction, prices."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from pydantic import BaseModel

from activities.call_journal import (
    AttemptJournal,
    JournalLimits,
    NotReplayable,
    decode_llm,
    decode_tool,
    encode_llm,
    encode_tool,
)
from activities.fingerprints import llm_fingerprint, tool_fingerprint
from backend.db import journal
from backend.db.models import JournalEntry, utcnow
from backend.db.store import Store
from backend.exceptions.redaction import set_env_secrets
from backend.pricing import PriceOverride, PriceTable, Usage

SYSTEM = "You are Researcher. You search.\n\nCurrent Date: 2026-12-03"


def messages(date: str = "2026-12-03", call_id: str = "call_abc") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": f"You are Researcher. You search.\n\nCurrent Date: {date}"},
        {"role": "user", "content": "Look up otters"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call_id,
            "name": "lookup",
            "content": "stored as tool-result-Zx81_aQ",
        },
    ]


# --- fingerprints --------------------------------------------------------------------------------


def test_an_llm_request_keeps_its_fingerprint_across_dates_call_ids_artifacts_and_stop_order() -> None:
    first = llm_fingerprint("gpt-4o-mini", messages(), stop=["\nObservation:", "x"])
    later = messages(date="2027-01-01", call_id="call_other")
    later[3]["content"] = "stored as tool-result-Q9pp2"

    assert llm_fingerprint("gpt-4o-mini", later, stop=["x", "\nObservation:"]) == first


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m[1].update(content="Look up beavers"),  # another input
        lambda m: m[3].update(content="another answer"),  # another tool result
        lambda m: m[2]["tool_calls"][0]["function"].update(arguments='{"q": 2}'),  # other arguments
        lambda m: m.append({"role": "user", "content": "User feedback: shorter"}),  # feedback
    ],
)
def test_an_llm_request_that_asks_something_else_has_another_fingerprint(change: Any) -> None:
    changed = messages()
    change(changed)

    assert llm_fingerprint("gpt-4o-mini", changed) != llm_fingerprint("gpt-4o-mini", messages())


def test_the_model_tools_and_response_model_are_part_of_an_llm_request() -> None:
    class Answer(BaseModel):
        text: str

    base = llm_fingerprint("gpt-4o-mini", messages())
    assert llm_fingerprint("gpt-4o", messages()) != base
    assert llm_fingerprint("gpt-4o-mini", messages(), tools=[{"function": {"name": "lookup"}}]) != base
    assert llm_fingerprint("gpt-4o-mini", messages(), response_model=Answer) != base
    assert llm_fingerprint("gpt-4o-mini", "Look up otters") == llm_fingerprint(
        "gpt-4o-mini", [{"role": "user", "content": "Look up otters"}]
    )


def test_a_tool_request_is_its_name_and_arguments_whatever_their_order() -> None:
    assert tool_fingerprint("lookup", (), {"a": 1, "b": [1, 2]}) == tool_fingerprint(
        "lookup", (), {"b": [1, 2], "a": 1}
    )
    assert tool_fingerprint("lookup", (), {"a": 1}) != tool_fingerprint("lookup", (), {"a": 2})
    assert tool_fingerprint("lookup", (), {"a": 1}) != tool_fingerprint("search", (), {"a": 1})


# --- answers as JSON ------------------------------------------------------------------------------


def test_llm_answers_round_trip_as_crewai_reads_them() -> None:
    class Finding(BaseModel):
        topic: str

    call = ChatCompletionMessageFunctionToolCall(
        id="call_1", type="function", function={"name": "lookup", "arguments": '{"q": "otters"}'}
    )

    assert decode_llm(encode_llm("Final Answer: 42")) == "Final Answer: 42"
    assert decode_llm(encode_llm(Finding(topic="otters")), Finding) == Finding(topic="otters")
    assert decode_llm(encode_llm([call])) == [call.model_dump(mode="json")]
    with pytest.raises(NotReplayable):
        encode_llm(object())
    with pytest.raises(NotReplayable):
        decode_llm(encode_llm(Finding(topic="otters")))  # no model to rebuild it with


def test_tool_answers_round_trip_including_a_tool_failure() -> None:
    failure = ToolFailure(message="no such page", reason=ToolFailureReason.TOOL_REPORTED, code="404")

    assert decode_tool(encode_tool("text")) == "text"
    assert decode_tool(encode_tool({"rows": [1, 2]})) == {"rows": [1, 2]}
    assert decode_tool(encode_tool(failure)) == failure
    with pytest.raises(NotReplayable):
        encode_tool(object())


# --- the tape ---------------------------------------------------------------------------------------


@pytest.fixture
def any_store(any_db_url: str) -> Store:
    return Store.from_url(any_db_url)


def new_execution(store: Store) -> str:
    spec = {
        "name": "j",
        "agents": [{"name": "a", "role": "R", "goal": "G", "llm": {"model": "gpt-4o-mini"}}],
        "tasks": [{"name": "t", "description": "d", "expected_output": "e", "agent": "a"}],
    }
    execution, _ = store.create_execution(
        crew_id=None, crew_name="j", spec=spec, inputs={}, idempotency_key=None, request_hash=None
    )
    return execution.id


def attempt_journal(store: Store, execution_id: str, attempt: int, **kw: Any) -> AttemptJournal:
    with store.db.read() as s:
        tape = journal.tape(s, execution_id, "t", 0, attempt)
    return AttemptJournal(
        store.db, execution_id=execution_id, task="t", revision=0, attempt=attempt, tape=tape, **kw
    )


def run_calls(j: AttemptJournal, requests: list[str], fail_at: int | None = None) -> list[str]:
    """Each request served or made live ("live:<fp>" answers); returns where each answer came from."""
    sources = []
    for index, fp in enumerate(requests):
        served = j.served("llm", fp)
        if served is not None:
            j.record_replayed("llm", "m", "svc", served, time.monotonic())
            sources.append(f"replayed:{json.loads(served.response)['text']}")
        elif index == fail_at:
            j.record_failed("llm", "m", "svc", fp, "LLM_PROVIDER_ERROR", time.monotonic())
            sources.append("failed")
            break
        else:
            j.record_live("llm", "m", "svc", fp, encode_llm(f"{fp}@{j.attempt}"), time.monotonic())
            sources.append("live")
    return sources


def test_a_retried_attempt_is_served_the_calls_before_the_failure_and_goes_live_after(
    any_store: Store,
) -> None:
    execution_id = new_execution(any_store)
    assert run_calls(attempt_journal(any_store, execution_id, 1), ["a", "b", "c", "d"], fail_at=3) == [
        "live",
        "live",
        "live",
        "failed",
    ]

    second = run_calls(attempt_journal(any_store, execution_id, 2), ["a", "b", "c", "d"])

    assert second == ["replayed:a@1", "replayed:b@1", "replayed:c@1", "live"]


def test_an_attempt_that_stopped_while_being_served_leaves_the_older_calls_on_the_tape(
    any_store: Store,
) -> None:
    execution_id = new_execution(any_store)
    run_calls(attempt_journal(any_store, execution_id, 1), ["a", "b", "c", "d"], fail_at=3)
    # Attempt 2 dies (kill -9) after being served two calls.
    run_calls(attempt_journal(any_store, execution_id, 2), ["a", "b"])

    third = run_calls(attempt_journal(any_store, execution_id, 3), ["a", "b", "c", "d"])

    assert third == ["replayed:a@1", "replayed:b@1", "replayed:c@1", "live"]


def test_the_first_different_request_ends_replay_for_every_later_call(any_store: Store) -> None:
    execution_id = new_execution(any_store)
    run_calls(attempt_journal(any_store, execution_id, 1), ["a", "b", "c"], fail_at=2)

    second = run_calls(attempt_journal(any_store, execution_id, 2), ["a", "X", "b", "c"])

    assert second == ["replayed:a@1", "live", "live", "live"]  # b matches, but replay has ended


def test_a_diverged_attempt_is_the_tape_of_the_next_one(any_store: Store) -> None:
    execution_id = new_execution(any_store)
    run_calls(attempt_journal(any_store, execution_id, 1), ["a", "b", "c", "d", "e"], fail_at=4)
    run_calls(attempt_journal(any_store, execution_id, 2), ["a", "X", "Y"], fail_at=2)

    assert run_calls(attempt_journal(any_store, execution_id, 3), ["a", "X", "Y"]) == [
        "replayed:a@1",
        "replayed:X@2",
        "live",
    ]


def test_calls_made_in_parallel_match_in_any_order_within_the_window() -> None:
    entries = [journal.TapeEntry(i, 1, "tool", "t", fp, encode_tool(fp), 0, 0) for i, fp in enumerate("abcd")]
    j = AttemptJournal(None, execution_id="e", task="t", revision=0, attempt=2, tape=journal.Tape(entries, 0))  # type: ignore[arg-type]

    order = [j.served("tool", fp) for fp in "cadb"]

    assert [decode_tool(e.response) for e in order if e is not None] == ["c", "a", "d", "b"]


def test_a_call_that_may_not_be_served_takes_its_place_and_goes_live() -> None:
    entries = [journal.TapeEntry(i, 1, "tool", "t", fp, encode_tool(fp), 0, 0) for i, fp in enumerate("ab")]
    j = AttemptJournal(None, execution_id="e", task="t", revision=0, attempt=2, tape=journal.Tape(entries, 0))  # type: ignore[arg-type]

    assert j.served("tool", "a", replayable=False) is None  # replay: false on this tool
    served = j.served("tool", "b")
    assert served is not None and decode_tool(served.response) == "b"


def test_replay_turned_off_records_but_never_serves(any_store: Store) -> None:
    execution_id = new_execution(any_store)
    run_calls(attempt_journal(any_store, execution_id, 1), ["a", "b"], fail_at=1)

    assert run_calls(attempt_journal(any_store, execution_id, 2, replay=False), ["a", "b"]) == [
        "live",
        "live",
    ]


def test_an_answer_over_the_bounds_is_kept_by_its_hash_and_not_served(any_store: Store) -> None:
    execution_id = new_execution(any_store)
    limits = JournalLimits(max_call_bytes=40, max_execution_bytes=1000)
    first = attempt_journal(any_store, execution_id, 1, limits=limits)
    first.record_live("llm", "m", "svc", "small", encode_llm("ok"), time.monotonic())
    first.record_live("llm", "m", "svc", "big", encode_llm("x" * 100), time.monotonic())

    with any_store.db.read() as s:
        rows = {r.fingerprint: r for r in s.query(JournalEntry).filter_by(execution_id=execution_id)}
    assert rows["big"].response is None and rows["big"].response_hash and not rows["big"].replayable
    assert rows["small"].replayable
    served = run_calls(attempt_journal(any_store, execution_id, 2, limits=limits), ["small", "big"])
    assert served == ["replayed:ok", "live"]


def test_secrets_never_reach_the_journal(any_store: Store) -> None:
    execution_id = new_execution(any_store)
    set_env_secrets({"SEARCH_API_KEY": "canary-tool-secret-7f3a9c"})
    try:
        j = attempt_journal(any_store, execution_id, 1)
        j.record_live(
            "tool", "lookup", "svc", "fp", encode_tool("key is canary-tool-secret-7f3a9c"), time.monotonic()
        )
    finally:
        set_env_secrets({})

    with any_store.db.read() as s:
        stored = s.query(JournalEntry).filter_by(execution_id=execution_id).one().response
    assert stored is not None and "canary-tool-secret-7f3a9c" not in stored


def test_a_dead_letters_replay_is_served_the_calls_of_the_execution_it_replays(any_store: Store) -> None:
    from backend.db.models import DeadLetter

    original, replay = new_execution(any_store), new_execution(any_store)
    run_calls(attempt_journal(any_store, original, 1), ["a", "b"], fail_at=1)
    with any_store.db.transaction("test") as s:
        letter = DeadLetter(id="dl-1", execution_id=original, workflow_id="w", run_id="r", reason="x")
        letter.completed_tasks, letter.inputs, letter.spec = [], {}, {}
        letter.status, letter.replayed_execution_id = "replayed", replay
        s.add(letter)

    assert run_calls(attempt_journal(any_store, replay, 1), ["a", "b"]) == ["replayed:a@1", "live"]


def test_journal_rows_of_executions_finished_before_the_retention_are_pruned_and_totals_stay(
    any_store: Store,
) -> None:
    old, recent = new_execution(any_store), new_execution(any_store)
    for execution_id in (old, recent):
        j = attempt_journal(any_store, execution_id, 1, prices=PriceTable())
        j.record_live(
            "llm", "gpt-4o-mini", "svc", "a", encode_llm("x"), time.monotonic(), usage=Usage(1000, 500)
        )
    with any_store.db.transaction("test") as s:
        from backend.db.models import Execution

        s.get(Execution, old).finished_at = utcnow() - timedelta(days=10)  # type: ignore[union-attr]
        s.get(Execution, recent).finished_at = utcnow() - timedelta(days=1)  # type: ignore[union-attr]

    assert any_store.prune_journal(utcnow() - timedelta(days=7)) == 1
    assert any_store.list_steps(old, limit=10, cursor=None).items == []
    assert len(any_store.list_steps(recent, limit=10, cursor=None).items) == 1
    assert any_store.execution_cost(old) == pytest.approx(0.00045)  # the task keeps its totals


# --- prices -------------------------------------------------------------------------------------------


def test_prices_come_from_the_maintained_table_with_deployment_overrides() -> None:
    table = PriceTable({"private-model": PriceOverride(input_per_mtok=1.0, output_per_mtok=4.0)})

    # gpt-4o-mini as OpenAI publishes it: $0.15 per million input tokens, $0.60 per million output.
    assert table.cost("gpt-4o-mini", Usage(1000, 500), "openai") == pytest.approx(
        1000 * 0.15e-6 + 500 * 0.60e-6
    )
    assert table.cost("openai/gpt-4o-mini", Usage(1000, 500)) == pytest.approx(0.00045)  # CrewAI's prefix
    assert table.cost("private-model", Usage(1000, 500)) == pytest.approx(1000 * 1e-6 + 500 * 4e-6)
    assert table.cost("no-such-model", Usage(10, 10), "openai") is None


def test_the_price_table_is_loaded_when_it_is_built_not_by_the_first_priced_call() -> None:
    # A worker builds its table at start. Loaded lazily, the table's import of httpx2 ran in one
    # attempt's thread while openai's SDK, in others, found the half-built module in sys.modules.
    code = (
        "import sys; from backend.pricing import PriceTable; before = 'httpx2' in sys.modules; "
        "PriceTable(); print(before, 'httpx2' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.split() == ["False", "True"]


def test_cached_input_tokens_are_read_from_a_providers_report() -> None:
    report = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 40}}

    assert Usage.from_report(report) == Usage(100, 20, 40)
    assert Usage.from_report({"input_tokens": 7, "output_tokens": 3}) == Usage(7, 3, 0)
