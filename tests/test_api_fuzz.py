"""Schema-driven fuzzing of the whole API (schemathesis over the OpenAPI schema, in-process ASGI):
no 5xx and no response that breaks its documented schema, whatever the input."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from temporalio.client import Client

from backend.api.app import create_app
from backend.settings import Settings

EXAMPLES_PER_OPERATION = int(os.environ.get("CREWRUN_FUZZ_EXAMPLES", "120"))  # x 25 operations


@pytest.fixture
async def fuzz_app(temporal_client: Client, settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings, temporal_client=temporal_client, reconcile=False)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def fuzz_schema(fuzz_app: FastAPI) -> schemathesis.Schema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def test_no_input_makes_the_api_fail_or_break_its_schema(fuzz_schema: schemathesis.Schema) -> None:
    # Drives hypothesis per operation here (schemathesis' pytest plugin does not run on pytest 9).
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 20
    cases = 0

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def check(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            # Semantic validation (unknown agents, context cycles, missing inputs) rejects requests
            # a JSON schema cannot tell apart from good ones: that check would flag every 422.
            case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])

        check()
    print(f"\n{cases} generated cases over {len(operations)} operations")
