"""The category traits table (every category has a row, every derived view agrees with it) and the
two code registries (failures of tasks, problems of API requests)."""

from __future__ import annotations

import re
from pathlib import Path

from backend.api.problem_codes import PROBLEMS
from backend.breaker import BreakerConfig
from backend.exceptions.categories import (
    BREAKER_COUNTED,
    DEFAULT_POLICIES,
    FALLS_BACK,
    NEVER,
    NON_RETRYABLE,
    PAUSES_BY_DEFAULT,
    TOOL_TELLS_LLM,
    TRAITS,
    Category,
    CategoryTraits,
    traits,
)
from backend.exceptions.codes import REGISTRY
from backend.settings import Settings
from workflows.contracts import ActivityTuning
from workflows.policies import task_retry_policy


def test_every_category_has_traits() -> None:
    assert set(TRAITS) == set(Category)


def test_every_failure_code_belongs_to_a_category_with_traits() -> None:
    assert {entry.category for entry in REGISTRY.values()} <= set(TRAITS)


def test_the_derived_views_are_the_table() -> None:
    assert NON_RETRYABLE == (
        "validation",
        "context_length",
        "content_policy",
        "authentication",
        "quota_exhausted",
        "configuration",
        "cancelled",
    )
    assert {"network", "timeout", "external_service"} == BREAKER_COUNTED
    assert {"network", "timeout", "rate_limit", "external_service", "quota_exhausted"} == FALLS_BACK
    assert PAUSES_BY_DEFAULT == ("authentication", "quota_exhausted", "configuration")
    assert {c: p.maximum_attempts for c, p in DEFAULT_POLICIES.items() if p.retryable} == {
        "network": 8,
        "timeout": 5,
        "rate_limit": 12,
        "external_service": 6,
        "circuit_open": 1000,
        "resource_exhaustion": 4,
        "database": 10,
        "llm_output": 3,
        "internal": 2,
    }


def test_the_places_that_use_a_trait_read_it_from_the_table() -> None:
    assert Settings().pause_categories == list(PAUSES_BY_DEFAULT)
    assert ActivityTuning().pause_categories == list(PAUSES_BY_DEFAULT)
    config = BreakerConfig()
    assert {c.value for c in Category if config.counts(c.value)} == BREAKER_COUNTED
    assert BreakerConfig(count_rate_limits=True).counts("rate_limit") is True
    declared = task_retry_policy(dict(DEFAULT_POLICIES)).non_retryable_error_types
    assert declared is not None and set(declared) == set(NON_RETRYABLE)


def test_a_known_category_by_its_value_has_its_row_of_the_table() -> None:
    assert {c.value: traits(c.value) for c in Category} == {c.value: row for c, row in TRAITS.items()}
    assert traits("validation").tool_tells_llm and traits("network").policy.maximum_attempts == 8


def test_an_unknown_category_is_never_retried() -> None:
    assert traits("martian") == CategoryTraits(NEVER)
    assert traits("martian").policy == NEVER and not traits("martian").retryable
    assert not traits("martian").tool_tells_llm  # a failure nobody knows ends the attempt


def test_only_bad_arguments_are_told_to_the_llm_by_default() -> None:
    assert {"validation"} == TOOL_TELLS_LLM


def test_the_failure_and_problem_registries_share_only_internal_error() -> None:
    assert set(PROBLEMS) & set(REGISTRY) == {"INTERNAL_ERROR"}


def test_every_code_the_api_answers_with_is_a_problem_code() -> None:
    api = Path(__file__).resolve().parent.parent / "backend" / "api"
    source = "\n".join(p.read_text() for p in api.rglob("*.py"))
    used = set(re.findall(r'(?:ProblemError|problem_response|problem)\(\s*"([A-Z_]+)"', source))
    assert len(used) >= 15 and used <= set(PROBLEMS), sorted(used - set(PROBLEMS))


def test_outcome_codes_are_final_and_never_retried() -> None:
    final = {code for code, entry in REGISTRY.items() if entry.final}
    assert final == {
        "TASK_FAILED",
        "TASK_TIMED_OUT",
        "WORKFLOW_CODE_ERROR",
        "EXECUTION_PAUSE_TIMEOUT",
        "EXECUTION_FEEDBACK_TIMEOUT",
        "EXECUTION_ABORTED",
        "EXECUTION_CANCELLED",
    }
    assert not any(REGISTRY[code].retryable for code in final)
    assert REGISTRY["LLM_TIMEOUT"].retryable and REGISTRY["INTERNAL_ERROR"].retryable
