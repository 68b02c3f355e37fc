"""The HTTP API in-process (ASGI) against the real dev server, a real worker and SQLite."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from backend.db.store import Store
from tests.ledger import check_ledger
from tests.support import SimulatorServer, assert_problem, research_spec, wait_terminal


async def test_crew_lifecycle_and_execution_end_to_end(api: httpx.AsyncClient, sim: SimulatorServer) -> None:
    created = await api.post("/api/v1/crews", json=research_spec(sim.base_url))
    assert created.status_code == 201
    crew = created.json()
    assert_problem(await api.post("/api/v1/crews", json=research_spec(sim.base_url)), 409, "CREW_NAME_TAKEN")
    assert (await api.get(f"/api/v1/crews/{crew['id']}")).json()["name"] == "research"

    started = await api.post("/api/v1/executions", json={"crew_id": crew["id"], "inputs": {"topic": "owls"}})
    assert started.status_code == 202
    execution = started.json()
    assert execution["status"] in ("pending", "running")
    assert execution["temporal_ui_url"].endswith(
        f"/workflows/{execution['workflow_id']}/{execution['run_id']}/history"
    )

    done = await wait_terminal(api, execution["id"])
    assert done["status"] == "completed"
    assert [t["status"] for t in done["tasks"]] == ["completed"] * 3
    assert done["tasks"][0]["output"].startswith("[researcher] findings")
    listed = (await api.get("/api/v1/executions", params={"crew_id": crew["id"]})).json()
    assert [e["id"] for e in listed["items"]] == [execution["id"]]
    assert listed["items"][0]["tasks"][0]["output"] is None  # lists leave outputs out
    logs = (await api.get(f"/api/v1/executions/{execution['id']}/logs")).json()["items"]
    events = [entry["event"] for entry in logs]
    assert events[0] == "execution.accepted" and events[-1] == "execution.completed"
    assert events.count("task.completed") == 3
    assert_problem(await api.post(f"/api/v1/executions/{execution['id']}/cancel"), 409, "EXECUTION_TERMINAL")


async def test_idempotency_key_returns_the_same_execution(
    api: httpx.AsyncClient, sim: SimulatorServer, store: Store, temporal_client: Client
) -> None:
    # S5: the same key twice in a row, then 20 times concurrently (with a fresh key too).
    body = {"crew": research_spec(sim.base_url, name="idem"), "inputs": {"topic": "bees"}}
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post("/api/v1/executions", json=body, headers=headers)
    again = await api.post("/api/v1/executions", json=body, headers=headers)
    concurrent = await asyncio.gather(
        *(api.post("/api/v1/executions", json=body, headers=headers) for _ in range(20))
    )
    assert first.status_code == 202 and again.status_code == 200
    assert {r.status_code for r in concurrent} == {200}
    assert {r.json()["id"] for r in [again, *concurrent]} == {first.json()["id"]}
    fresh = {**body, "inputs": {"topic": "ants"}}
    racing = await asyncio.gather(
        *(
            api.post("/api/v1/executions", json=fresh, headers={"Idempotency-Key": "order-43"})
            for _ in range(20)
        )
    )
    assert sorted(r.status_code for r in racing) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in racing}) == 1
    other = copy.deepcopy(body)
    other["inputs"]["topic"] = "wasps"
    assert_problem(
        await api.post("/api/v1/executions", json=other, headers=headers), 409, "IDEMPOTENCY_KEY_REUSED"
    )
    ids = [first.json()["id"], racing[0].json()["id"]]
    for execution_id in ids:
        await wait_terminal(api, execution_id)
    assert len(sim.calls("researcher")) == 2  # one workflow per key ran, once
    report = await check_ledger(store, temporal_client, ids)
    print(f"\nS5: {report.line()}")
    assert report.problems == [] and report.by_status["completed"] == 2 and report.duplicates == 0


async def test_cancel_running_execution_records_cancelled(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    from backend.simulator.script import FaultRule

    sim.script.add_rules([FaultRule(kind="slow", agent="analyst", delay_s=3)])
    started = (
        await api.post(
            "/api/v1/executions",
            json={"crew": research_spec(sim.base_url, name="slow"), "inputs": {"topic": "x"}},
        )
    ).json()
    for _ in range(100):
        if sim.calls("analyst"):
            break
        await asyncio.sleep(0.05)
    cancelled = await api.post(f"/api/v1/executions/{started['id']}/cancel")
    assert cancelled.status_code == 202
    done = await wait_terminal(api, started["id"])
    assert done["status"] == "cancelled"
    assert sim.calls("writer") == []


def _spec_with(sim: SimulatorServer, **changes: Any) -> dict[str, Any]:
    spec = research_spec(sim.base_url, name="bad")
    for path, value in changes.items():
        target: Any = spec
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return spec


@pytest.mark.parametrize(
    ("changes", "error_loc"),
    [
        ({"tasks__1__agent": "ghost"}, ["tasks", 1, "agent"]),
        ({"tasks__0__context": ["write"]}, ["tasks", 0, "context", 0]),
        ({"tasks__2__context": ["nope"]}, ["tasks", 2, "context", 0]),
        ({"tasks__1__context": ["write"], "tasks__2__context": ["analyse"]}, ["tasks", 1, "context"]),
        ({"agents__0__llm__base_url": "ftp://x"}, ["agents", 0, "llm", "base_url"]),
        ({"agents__0__llm__api_key_env": "not a var"}, ["agents", 0, "llm", "api_key_env"]),
        ({"tasks__0__retry": {"made_up": {"maximum_attempts": 2}}}, ["tasks", 0, "retry"]),
        ({"process": "hierarchical"}, ["process"]),
        ({"tasks": []}, ["tasks"]),
        ({"name": "has spaces"}, ["name"]),
    ],
)
async def test_invalid_crew_specs_get_422_with_field_errors(
    api: httpx.AsyncClient, sim: SimulatorServer, changes: dict[str, Any], error_loc: list[Any]
) -> None:
    body = assert_problem(
        await api.post("/api/v1/crews", json=_spec_with(sim, **changes)), 422, "CREW_SPEC_INVALID"
    )
    assert error_loc in [e["loc"] for e in body["errors"]], body["errors"]
    inline = await api.post("/api/v1/executions", json={"crew": _spec_with(sim, **changes), "inputs": {}})
    assert_problem(inline, 422, "CREW_SPEC_INVALID")


async def test_bad_requests_get_problem_json_never_500(api: httpx.AsyncClient, sim: SimulatorServer) -> None:
    spec = research_spec(sim.base_url, name="inputs")
    missing = assert_problem(
        await api.post("/api/v1/executions", json={"crew": spec, "inputs": {}}), 422, "CREW_SPEC_INVALID"
    )
    assert missing["errors"] == [
        {"loc": ["inputs", "topic"], "msg": "missing input for {topic}", "type": "missing"}
    ]
    assert_problem(
        await api.post("/api/v1/executions", json={"crew_id": "nope", "inputs": {}}), 404, "CREW_NOT_FOUND"
    )
    assert_problem(await api.post("/api/v1/executions", json={"inputs": {}}), 422, "REQUEST_INVALID")
    assert_problem(
        await api.post("/api/v1/executions", json={"crew_id": "x", "crew": spec}), 422, "REQUEST_INVALID"
    )
    assert_problem(
        await api.post("/api/v1/executions", json={"crew_id": "x", "status": "completed"}),
        422,
        "REQUEST_INVALID",
    )
    assert_problem(await api.get("/api/v1/executions/does-not-exist"), 404, "EXECUTION_NOT_FOUND")
    assert_problem(await api.get("/api/v1/crews/does-not-exist"), 404, "CREW_NOT_FOUND")
    assert_problem(await api.post("/api/v1/executions/nope/cancel"), 404, "EXECUTION_NOT_FOUND")
    assert_problem(await api.get("/api/v1/executions", params={"status": "weird"}), 422, "REQUEST_INVALID")
    assert_problem(await api.get("/api/v1/executions", params={"cursor": "!!"}), 422, "REQUEST_INVALID")
    assert_problem(await api.get("/api/v1/executions", params={"limit": 501}), 422, "REQUEST_INVALID")
    assert_problem(
        await api.post("/api/v1/crews", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "REQUEST_MALFORMED",
    )
    assert_problem(
        await api.post(
            "/api/v1/crews", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}
        ),
        400,
        "REQUEST_MALFORMED",
    )
    assert_problem(
        await api.post(
            "/api/v1/crews", content=b"x" * 2_000_000, headers={"content-type": "application/json"}
        ),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    huge_inputs = {"crew": spec, "inputs": {"topic": "y" * 70_000}}
    assert_problem(await api.post("/api/v1/executions", json=huge_inputs), 413, "PAYLOAD_TOO_LARGE")
    assert_problem(await api.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert_problem(await api.delete("/api/v1/crews"), 405, "METHOD_NOT_ALLOWED")


async def test_list_pagination_walks_every_execution_once(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    spec = research_spec(sim.base_url, name="pages")
    crew = (await api.post("/api/v1/crews", json=spec)).json()
    ids = set()
    for i in range(5):
        ids.add(
            (
                await api.post(
                    "/api/v1/executions", json={"crew_id": crew["id"], "inputs": {"topic": str(i)}}
                )
            ).json()["id"]
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"crew_id": crew["id"], "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/api/v1/executions", params=params)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids)
    for execution_id in ids:
        await wait_terminal(api, execution_id)


async def test_health_and_error_codes(api: httpx.AsyncClient) -> None:
    health = await api.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "temporal": "ok"}
    listed = (await api.get("/api/v1/error-codes")).json()
    codes = {c["code"]: c for c in listed}
    assert len(codes) == len(listed)  # each code once, whichever registry it is in
    assert codes["CREW_SPEC_INVALID"] | {"description": "", "remedy": ""} == {
        "code": "CREW_SPEC_INVALID",
        "kind": "problem",
        "category": None,
        "severity": None,
        "retryable": False,
        "http_status": 422,
        "description": "",
        "remedy": "",
    }
    assert codes["API_RATE_LIMITED"]["retryable"] is True  # ask again after Retry-After
    assert codes["LLM_AUTH_FAILED"] | {"description": "", "remedy": ""} == {
        "code": "LLM_AUTH_FAILED",
        "kind": "failure",
        "category": "authentication",
        "severity": "critical",
        "retryable": False,
        "http_status": 401,
        "description": "",
        "remedy": "",
    }
    assert codes["LLM_RATE_LIMITED"]["retryable"] is True and codes["TASK_TIMED_OUT"]["retryable"] is False


async def test_errors_route_lists_every_failed_attempt_oldest_first(
    api: httpx.AsyncClient, sim: SimulatorServer
) -> None:
    from backend.simulator.script import FaultRule

    sim.script.add_rules([FaultRule(kind="server_error", agent="analyst", count=2, status=503)])
    started = await api.post(
        "/api/v1/executions",
        json={"crew": research_spec(sim.base_url, name="errs"), "inputs": {"topic": "x"}},
    )
    done = await wait_terminal(api, started.json()["id"])
    assert done["status"] == "completed"
    analyse = done["tasks"][1]
    assert analyse["attempts"] == 3 and analyse["error"]["code"] == "LLM_PROVIDER_OVERLOADED"

    errors = (await api.get(f"/api/v1/executions/{done['id']}/errors")).json()
    assert [
        (e["task"], e["attempt"], e["code"], e["category"], e["status_code"]) for e in errors["items"]
    ] == [
        ("analyse", 1, "LLM_PROVIDER_OVERLOADED", "external_service", 503),
        ("analyse", 2, "LLM_PROVIDER_OVERLOADED", "external_service", 503),
    ]
    first = errors["items"][0]
    assert first["service"] == "127.0.0.1" and first["max_attempts"] == 6 and first["retryable"] is True
    assert first["fingerprint"] == errors["items"][1]["fingerprint"]
    assert first["cause_chain"][0]["type"] == "openai.InternalServerError"
    assert_problem(await api.get("/api/v1/executions/nope/errors"), 404, "EXECUTION_NOT_FOUND")


async def test_poison_inputs_get_4xx_never_5xx(api: httpx.AsyncClient, sim: SimulatorServer) -> None:
    spec = research_spec(sim.base_url, name="poison")
    nul = await api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": "a\x00b"}})
    assert_problem(nul, 422, "REQUEST_INVALID")
    deep: Any = "x"
    for _ in range(40):
        deep = {"k": deep}
    assert_problem(
        await api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": deep}}),
        422,
        "REQUEST_INVALID",
    )
    nul_spec = research_spec(sim.base_url, name="poison")
    nul_spec["agents"][0]["goal"] = "goal\x00"
    assert_problem(await api.post("/api/v1/crews", json=nul_spec), 422, "CREW_SPEC_INVALID")
    assert_problem(await api.get("/api/v1/executions/a%00b"), 422, "REQUEST_INVALID")
    assert_problem(await api.get("/api/v1/executions", params={"crew_id": "x\x00"}), 422, "REQUEST_INVALID")
    big = b'{"crew_id": "' + b"x" * 10_000_000 + b'"}'
    assert_problem(
        await api.post("/api/v1/executions", content=big, headers={"content-type": "application/json"}),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    # Template injection in inputs is plain text: nothing is evaluated (tests/test_specs.py).
    injected = await api.post("/api/v1/executions", json={"crew": spec, "inputs": {"topic": "{0.__class__}"}})
    assert injected.status_code == 202
    done = await wait_terminal(api, injected.json()["id"])
    assert done["status"] == "completed" and "{0.__class__}" in done["tasks"][0]["output"]


async def test_poison_bodies_invalid_utf8_huge_lists_and_unsized_streams(api: httpx.AsyncClient) -> None:
    invalid = await api.post(
        "/api/v1/crews", content=b'{"name": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert_problem(invalid, 400, "REQUEST_MALFORMED")
    huge_list = {"crew_id": "c", "inputs": {"topic": list(range(200_000))}}
    assert huge_list and (await api.post("/api/v1/executions", json=huge_list)).status_code in (413, 422)

    async def ten_megabytes() -> Any:  # no Content-Length: the limit holds while streaming
        for _ in range(10):
            yield b" " * 1_000_000

    streamed = await api.post(
        "/api/v1/crews", content=ten_megabytes(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413, "PAYLOAD_TOO_LARGE")


async def test_a_running_execution_whose_task_is_on_a_retry_shows_retrying(
    api: httpx.AsyncClient, store: Store
) -> None:
    spec = {"name": "c", "tasks": [{"name": "one", "agent": "a"}, {"name": "two", "agent": "a"}]}
    execution, _ = store.create_execution(
        crew_id=None, crew_name="c", spec=spec, inputs={}, idempotency_key=None, request_hash=None
    )
    store.transition_execution(execution.id, "running")
    store.start_task_attempt(execution.id, "one", 1)
    assert (await api.get(f"/api/v1/executions/{execution.id}")).json()["status"] == "running"

    store.start_task_attempt(execution.id, "one", 2)  # the second attempt of task one
    assert (await api.get(f"/api/v1/executions/{execution.id}")).json()["status"] == "retrying"
    listed = (await api.get("/api/v1/executions", params={"status": "retrying"})).json()["items"]
    assert [e["id"] for e in listed] == [execution.id]
    assert (await api.get("/api/v1/executions", params={"status": "running"})).json()["items"] == []


async def test_executions_filter_by_crew_name_and_error_category(
    api: httpx.AsyncClient, store: Store
) -> None:
    from backend.exceptions.records import ErrorRecord

    spec = {"name": "c", "tasks": [{"name": "one", "agent": "a"}]}

    def execution(crew_name: str, failed_with: str | None) -> str:
        created, _ = store.create_execution(
            crew_id=None, crew_name=crew_name, spec=spec, inputs={}, idempotency_key=None, request_hash=None
        )
        if failed_with:
            store.start_task_attempt(created.id, "one", 1)
            record = ErrorRecord(
                code="X",
                category=failed_with,
                severity="low",
                retryable=True,
                message="m",
                task="one",
                agent="a",
                attempt=1,
                category_attempt=1,
                max_attempts=3,
            )
            store.record_attempt_failure(created.id, "one", record=record, final=False)
        return created.id

    limited = execution("alpha", "rate_limit")
    refused = execution("beta", "authentication")
    clean = execution("alpha", None)

    async def listed(**params: str) -> list[str]:
        page = await api.get("/api/v1/executions", params=params)
        assert page.status_code == 200, page.text
        return [e["id"] for e in page.json()["items"]]

    assert await listed(crew_name="alpha") == [clean, limited]  # newest first
    assert await listed(error_category="rate_limit") == [limited]
    assert await listed(error_category="authentication") == [refused]
    assert await listed(crew_name="alpha", error_category="authentication") == []
    assert await listed(error_category="network") == []
    for bad in ({"error_category": "weird"}, {"crew_name": "no spaces"}, {"crew_name": "x" * 101}):
        assert_problem(await api.get("/api/v1/executions", params=bad), 422, "REQUEST_INVALID")
