"""Per-category retry policies (layering, envelope, jittered backoff) and error fingerprints."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from datetime import timedelta

import pytest

from backend.exceptions.categories import NON_RETRYABLE as NON_RETRYABLE_CATEGORIES
from backend.exceptions.categories import Category
from backend.exceptions.classifier import MAX_RETRY_AFTER_S
from backend.exceptions.fingerprint import fingerprint, normalize
from backend.exceptions.retry_policy import (
    DEFAULT_POLICIES,
    MAX_DELAY_S,
    OVERRIDABLE,
    CategoryPolicy,
    backoff_delay,
    envelope,
    from_json,
    next_delay,
    resolve,
    to_json,
)

# The table of README.md: category -> (maximum_attempts, initial_interval_s, backoff, maximum_interval_s)
EXPECTED_DEFAULTS: dict[str, tuple[int, float, float, float]] = {
    "network": (8, 1, 2, 60),
    "timeout": (5, 2, 2, 60),
    "rate_limit": (12, 5, 2, 300),
    "external_service": (6, 2, 2, 120),
    "circuit_open": (1000, 5, 1, 60),
    "resource_exhaustion": (4, 10, 2, 300),
    "database": (10, 1, 2, 30),
    "llm_output": (3, 1, 1, 1),
    "internal": (2, 1, 2, 10),
    "validation": (1, 1, 2, 60),
    "context_length": (1, 1, 2, 60),
    "content_policy": (1, 1, 2, 60),
    "authentication": (1, 1, 2, 60),
    "quota_exhausted": (1, 1, 2, 60),
    "configuration": (1, 1, 2, 60),
    "cancelled": (1, 1, 2, 60),
}


def _as_tuple(p: CategoryPolicy) -> tuple[int, float, float, float]:
    return (p.maximum_attempts, p.initial_interval_s, p.backoff, p.maximum_interval_s)


def test_defaults_cover_every_category_with_the_documented_table() -> None:
    assert set(DEFAULT_POLICIES) == {c.value for c in Category}
    assert {c: _as_tuple(p) for c, p in DEFAULT_POLICIES.items()} == EXPECTED_DEFAULTS
    assert {p.jitter for p in DEFAULT_POLICIES.values()} == {0.2}


def test_resolve_without_layers_is_the_defaults() -> None:
    assert resolve() == DEFAULT_POLICIES
    assert resolve(None, {}, None) == DEFAULT_POLICIES
    assert resolve() is not DEFAULT_POLICIES  # a copy: callers may not mutate the defaults


def test_resolve_layers_field_by_field_later_wins() -> None:
    settings = {"network": {"maximum_attempts": 3, "initial_interval_s": 0.5}, "timeout": {"jitter": 0.0}}
    crew = {"network": {"backoff": 3.0}, "rate_limit": {"maximum_interval_s": 120.0}}
    task = {"network": {"maximum_attempts": 4, "backoff": None}, "timeout": {"maximum_attempts": None}}

    table = resolve(settings, crew, task)

    assert table["network"] == CategoryPolicy(4, 0.5, 3.0, 60, 0.2)
    assert table["timeout"] == CategoryPolicy(5, 2, 2, 60, 0.0)
    assert table["rate_limit"] == CategoryPolicy(12, 5, 2, 120.0, 0.2)
    unchanged = set(DEFAULT_POLICIES) - {"network", "timeout", "rate_limit"}
    assert {c: table[c] for c in unchanged} == {c: DEFAULT_POLICIES[c] for c in unchanged}


def test_resolve_ignores_none_values() -> None:
    assert resolve({"database": {"maximum_attempts": None, "backoff": None}}) == DEFAULT_POLICIES


def test_resolve_does_not_mutate_the_defaults() -> None:
    resolve({"network": {"maximum_attempts": 99}})

    assert DEFAULT_POLICIES["network"].maximum_attempts == 8


@pytest.mark.parametrize(
    "category",
    ["authentication", "circuit_open", "validation", "quota_exhausted", "cancelled", "no_such_category"],
)
def test_resolve_refuses_non_overridable_and_unknown_categories(category: str) -> None:
    with pytest.raises(ValueError, match=f"retry of category '{category}' cannot be configured"):
        resolve({category: {"maximum_attempts": 5}})


def test_resolve_refuses_in_any_layer() -> None:
    with pytest.raises(ValueError, match="'authentication'"):
        resolve({"network": {"maximum_attempts": 2}}, None, {"authentication": {"maximum_attempts": 3}})


def test_overridable_is_the_retryable_categories_without_circuit_open() -> None:
    assert sorted(OVERRIDABLE) == [
        "database",
        "external_service",
        "internal",
        "llm_output",
        "network",
        "rate_limit",
        "resource_exhaustion",
        "timeout",
    ]
    assert OVERRIDABLE.isdisjoint(NON_RETRYABLE_CATEGORIES)


def test_retryable_means_more_than_one_attempt() -> None:
    assert CategoryPolicy(2).retryable is True
    assert CategoryPolicy(1).retryable is False
    assert CategoryPolicy(0).retryable is False


def _envelope_from_table(table: dict[str, tuple[int, float, float, float]]) -> int:
    return sum(attempts for attempts, *_rest in table.values() if attempts > 1)


def test_envelope_is_the_sum_of_retryable_budgets_including_circuit_waits() -> None:
    assert envelope(DEFAULT_POLICIES) == _envelope_from_table(EXPECTED_DEFAULTS)
    assert envelope(DEFAULT_POLICIES) == 1050  # 50 for failures + 1000 waits on an open circuit


def test_envelope_follows_overrides() -> None:
    table = resolve({"network": {"maximum_attempts": 20}, "internal": {"maximum_attempts": 1}})

    assert envelope(table) == 1050 - 8 + 20 - 2


# ---------------------------------------------------------------- delays


def _base(policy: CategoryPolicy, failures: int) -> float:
    return min(policy.maximum_interval_s, policy.initial_interval_s * policy.backoff ** (failures - 1))


@pytest.mark.parametrize("category", sorted(OVERRIDABLE))
@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
def test_backoff_delay_stays_within_jitter_bounds(category: str, seed: int) -> None:
    policy = DEFAULT_POLICIES[category]
    rng = random.Random(seed)

    for failures in range(1, 11):
        base = _base(policy, failures)
        delay = backoff_delay(policy, failures, rng)
        assert base * (1 - policy.jitter) <= delay <= base
        assert delay <= policy.maximum_interval_s


def test_backoff_base_doubles_then_caps() -> None:
    policy = DEFAULT_POLICIES["rate_limit"]
    no_jitter = CategoryPolicy(12, 5, 2, 300, jitter=0.0)
    rng = random.Random(0)

    assert [backoff_delay(no_jitter, n, rng) for n in range(1, 11)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
        300,
        300,
    ]
    assert [_base(policy, n) for n in range(1, 11)] == [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]


def test_backoff_delay_is_deterministic_for_a_seed() -> None:
    policy = DEFAULT_POLICIES["network"]

    first = [backoff_delay(policy, n, random.Random(7)) for n in range(1, 11)]
    second = [backoff_delay(policy, n, random.Random(7)) for n in range(1, 11)]

    assert first == second


def test_different_seeds_give_different_delays() -> None:
    policy = DEFAULT_POLICIES["network"]

    delays = {backoff_delay(policy, 3, random.Random(seed)) for seed in range(20)}

    assert len(delays) == 20
    assert min(delays) < max(delays)


@pytest.mark.parametrize("retry_after", [0.5, 3.0, 30.0, 299.0, 1000.0])
@pytest.mark.parametrize("seed", [0, 5, 99])
def test_next_delay_never_earlier_than_retry_after_and_within_its_jitter(
    retry_after: float, seed: int
) -> None:
    policy = DEFAULT_POLICIES["rate_limit"]
    rng = random.Random(seed)

    for failures in range(1, 11):
        delay = next_delay(policy, failures, rng, retry_after)
        assert retry_after <= delay <= retry_after * (1 + policy.jitter)


def test_next_delay_retry_after_replaces_the_backoff() -> None:
    # A short Retry-After is honoured as such: the category's (longer) backoff does not race it.
    policy = CategoryPolicy(5, 10, 2, 60, jitter=0.0)

    assert next_delay(policy, 4, random.Random(0), 3.0) == 3.0
    assert next_delay(policy, 1, random.Random(0), 25.0) == 25.0


def test_next_delay_jitters_the_retry_after() -> None:
    policy = DEFAULT_POLICIES["network"]

    delays = [next_delay(policy, 1, random.Random(seed), 1000.0) for seed in range(50)]

    assert all(1000.0 <= d <= 1200.0 for d in delays)
    assert len(set(delays)) == 50  # parked callers do not all return at once


@pytest.mark.parametrize("retry_after", [None, 0.0, -5.0, -math.inf, math.nan])
def test_next_delay_without_retry_after_is_the_backoff(retry_after: float | None) -> None:
    policy = DEFAULT_POLICIES["timeout"]

    assert next_delay(policy, 3, random.Random(11), retry_after) == backoff_delay(
        policy, 3, random.Random(11)
    )


def test_next_delay_is_deterministic_for_a_seed() -> None:
    policy = DEFAULT_POLICIES["rate_limit"]

    assert next_delay(policy, 2, random.Random(3), 30.0) == next_delay(policy, 2, random.Random(3), 30.0)
    assert next_delay(policy, 2, random.Random(3), 30.0) != next_delay(policy, 2, random.Random(4), 30.0)


def test_max_delay_is_a_day_like_the_classifier_cap() -> None:
    assert MAX_DELAY_S == MAX_RETRY_AFTER_S == 86_400.0


def test_next_delay_caps_a_retry_after_at_a_day() -> None:
    policy = CategoryPolicy(12, 5, 2, 300, jitter=0.0)

    delays = [
        next_delay(policy, 1, random.Random(0), ra) for ra in (86_399.0, 86_400.0, 86_401.0, 1e15, math.inf)
    ]

    assert delays == [86_399.0, 86_400.0, 86_400.0, 86_400.0, 86_400.0]


@pytest.mark.parametrize("retry_after", [86_400.5, 1e15, 1e308, math.inf])
@pytest.mark.parametrize("seed", [0, 5, 99])
def test_next_delay_caps_before_the_jitter(retry_after: float, seed: int) -> None:
    policy = DEFAULT_POLICIES["rate_limit"]

    delay = next_delay(policy, 1, random.Random(seed), retry_after)

    assert delay == next_delay(policy, 1, random.Random(seed), 86_400.0)  # the same draw on the cap
    assert 86_400.0 <= delay <= 86_400.0 * (1 + policy.jitter)
    assert timedelta(seconds=delay) <= timedelta(days=1.2)  # Temporal's timedelta does not overflow


# ---------------------------------------------------------------- JSON


def test_to_json_from_json_round_trip() -> None:
    table = resolve({"network": {"maximum_attempts": 3, "jitter": 0.1}})

    data = to_json(table)

    assert from_json(json.loads(json.dumps(data))) == table
    assert data["network"] == {
        "maximum_attempts": 3,
        "initial_interval_s": 1,
        "backoff": 2,
        "maximum_interval_s": 60,
        "jitter": 0.1,
    }
    assert data["rate_limit"] == asdict(DEFAULT_POLICIES["rate_limit"])


def test_from_json_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        from_json({"network": {"maximum_attempts": 3, "attempts": 4}})


# ---------------------------------------------------------------- fingerprints


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            "Rate limit reached: Limit 3, Used 3, Requested 1. Try again in 20s.",
            "Rate limit reached: Limit 500, Used 498, Requested 12. Try again in 1.5s.",
            id="numbers",
        ),
        pytest.param(
            "execution 3f2b8c1e-9d4a-4e7b-8f1c-2a3b4c5d6e7f failed",
            "execution 00000000-1111-2222-3333-444455556666 failed",
            id="uuids",
        ),
        pytest.param(
            "lease expired at 2025-03-14T12:00:00Z",
            "lease expired at 2024-01-01 08:30:15.123+02:00",
            id="iso-timestamps",
        ),
        pytest.param(
            "POST https://api.example.com/v1/chat?api_version=2024-02-01&deployment=a failed",
            "POST https://api.example.com/v1/chat?api_version=2025-01-01 failed",
            id="url-query",
        ),
        pytest.param(
            "request req_abc123def456 failed",
            "request req_ZZZ999yyy888xx failed",
            id="request-ids",
        ),
        pytest.param(
            "completion chatcmpl-9a8b7c6d5e failed", "completion chatcmpl-AAAABBBB failed", id="chatcmpl"
        ),
        pytest.param("object at 0x7f3a2b1c0d90", "object at 0x10ab", id="addresses"),
        pytest.param("digest 0123456789abcdef0123 bad", "digest fedcba9876543210 bad", id="hex"),
        pytest.param("  spaced\n\tmessage  ", "spaced message", id="whitespace"),
    ],
)
def test_fingerprint_ignores_volatile_parts(first: str, second: str) -> None:
    assert normalize(first) == normalize(second)
    assert fingerprint("LLM_RATE_LIMITED", "openai.RateLimitError", first) == fingerprint(
        "LLM_RATE_LIMITED", "openai.RateLimitError", second
    )


@pytest.mark.parametrize(
    ("message", "normalized"),
    [
        ("Limit 3, Used 3.5", "Limit <n>, Used <n>"),
        ("id 3f2b8c1e-9d4a-4e7b-8f1c-2a3b4c5d6e7f", "id <uuid>"),
        ("at 2025-03-14T12:00:00Z", "at <ts>"),
        ("GET https://h/p?q=1#frag", "GET https://h/p?<query>#frag"),
        ("req_abc123def456 and msg_01XYZabc", "req-<id> and msg-<id>"),
        ("ptr 0x7f3a", "ptr <addr>"),
    ],
)
def test_normalize(message: str, normalized: str) -> None:
    assert normalize(message) == normalized


def test_normalize_caps_the_key_at_500_chars() -> None:
    assert len(normalize("word " * 300)) == 500


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(
            ("LLM_RATE_LIMITED", "openai.RateLimitError"), ("LLM_TIMEOUT", "openai.RateLimitError"), id="code"
        ),
        pytest.param(
            ("LLM_RATE_LIMITED", "openai.RateLimitError"),
            ("LLM_RATE_LIMITED", "anthropic.RateLimitError"),
            id="type",
        ),
    ],
)
def test_fingerprint_differs_for_different_code_or_type(a: tuple[str, str], b: tuple[str, str]) -> None:
    message = "Rate limit reached for requests"

    assert fingerprint(*a, message) != fingerprint(*b, message)


def test_fingerprint_differs_for_different_words() -> None:
    assert fingerprint("INTERNAL_ERROR", "KeyError", "'result'") != fingerprint(
        "INTERNAL_ERROR", "KeyError", "'output'"
    )


def test_fingerprint_is_16_hex_chars_and_stable() -> None:
    fp = fingerprint("LLM_TIMEOUT", "httpx.ReadTimeout", "The read operation timed out")

    assert len(fp) == 16
    assert int(fp, 16) >= 0
    assert fp == fingerprint("LLM_TIMEOUT", "httpx.ReadTimeout", "The read operation timed out")
