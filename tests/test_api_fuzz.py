"""Schema-driven fuzzing of the whole API (schemathesis over the OpenAPI schema, in-process ASGI):
no 5xx and no response that breaks its documented schema, whatever the input."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.stateful import initialize
from schemathesis import checks
from schemathesis.generation.stateful.state_machine import StepOutput
from temporalio.client import Client

from backend.api.app import create_app
from backend.settings import Settings
from tests.support import ServedApp, research_spec

EXAMPLES_PER_OPERATION = int(os.environ.get("CREWRUN_FUZZ_EXAMPLES", "60"))  # x 25 operations


@pytest.fixture
async def fuzz_app(temporal_client: Client, settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def fuzz_schema(fuzz_app: FastAPI) -> schemathesis.Schema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def _operations() -> list[str]:
    """Every operation of the schema, by label ("GET /api/v1/crews"), known at collection time so
    each is a test of its own (the test processes share them out)."""
    import tempfile

    app = create_app(Settings(data_dir=tempfile.mkdtemp(prefix="crewrun-fuzz-")), reconcile=False)
    paths = app.openapi()["paths"]
    return [f"{method.upper()} {path}" for path, ops in paths.items() for method in ops]


OPERATIONS = _operations()


def test_the_fuzzer_reaches_every_operation() -> None:
    assert len(OPERATIONS) >= 24 and len(set(OPERATIONS)) == len(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_input_makes_the_api_fail_or_break_its_schema(
    fuzz_schema: schemathesis.Schema, label: str
) -> None:
    # Drives hypothesis here (schemathesis' pytest plugin does not run on pytest 9).
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, label
    cases = 0

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        nonlocal cases
        cases += 1
        # Semantic validation (unknown agents, context cycles, missing inputs) rejects requests
        # a JSON schema cannot tell apart from good ones: that check would flag every 422.
        case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])

    check()
    assert cases >= 1
    print(f"\n{label}: {cases} generated cases")


STATEFUL_SCENARIOS = int(os.environ.get("CREWRUN_FUZZ_SCENARIOS", "150"))  # x up to 6 chained requests


@pytest.fixture
def served_schema(temporal_client: Client, settings: Settings) -> Iterator[schemathesis.Schema]:
    """The API on a real loopback port, in a thread with its own event loop and Temporal client:
    the chained requests reach Temporal (ASGI calls run on a loop of their own per call, where a
    client bound to the test's loop cannot be used)."""
    address = temporal_client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": address}), reconcile=False)
    with ServedApp(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_chained_requests_along_the_links_never_fail_or_break_the_schema(
    served_schema: schemathesis.Schema,
) -> None:
    fuzz_schema = served_schema
    # The OpenAPI links (backend/api/links.py) chain real ids: create crew -> start execution ->
    # get / cancel / resume / skip / logs / errors, and replay -> the new execution.
    base = fuzz_schema.as_state_machine()
    followed: Counter[str] = Counter()
    steps = 0

    create = fuzz_schema["/api/v1/executions"]["POST"]

    class Chained(base):  # type: ignore[misc, valid-type]
        @initialize()
        def start_a_real_execution(self) -> None:
            # Random crew specs almost never pass semantic validation, so each scenario starts
            # from one accepted execution whose id the links then carry into the next requests.
            spec = research_spec(lambda a: f"http://127.0.0.1:9/agents/{a}/v1")
            case = create.Case(body={"crew": spec, "inputs": {"topic": "fuzz"}})
            self.recorder.record_case(case=case)  # the parent the links' transitions point at
            output = StepOutput(case.call(), case)
            self.after_call(output.response, case)
            assert output.response.status_code == 202, output.response.text
            assert self._get_target_for_result(output) is not None
            self._add_results_to_targets((), [output])  # into the bundle its links read from

        def step(self, input: Any) -> Any:
            nonlocal steps
            steps += 1
            if input.transition is not None and input.is_applied:  # an id was really carried over
                followed[input.case.operation.label] += 1
            return super().step(input)

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, excluded_checks=[checks.positive_data_acceptance])

    # No shrinking: every chained request reaches Temporal, and a failure is reported as found.
    Chained.run(
        settings=hypothesis_settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            phases=[Phase.explicit, Phase.generate],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print(f"\n{steps} chained requests; followed links into: {dict(followed)}")
    # The links were really followed: an id from one response fed the next request.
    assert followed["GET /api/v1/executions/{execution_id}"] > 0
    assert followed["POST /api/v1/executions/{execution_id}/cancel"] > 0
    assert followed["POST /api/v1/executions/{execution_id}/resume"] > 0
