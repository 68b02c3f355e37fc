"""Per-category retry: overrides of the policies, and the delay before the next attempt.

Temporal gives one RetryPolicy per activity call and no jitter. crewrun keeps one policy per error
category (the defaults are part of each category's traits, backend/exceptions/categories.py),
merges overrides (settings, then crew spec, then task spec), and the activity boundary enforces
the category's own budget and jittered backoff through ``next_retry_delay``. Pure and deterministic given its ``rng``: the workflow sandbox imports it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from backend.exceptions.categories import DEFAULT_POLICIES, Category, CategoryPolicy

__all__ = ["DEFAULT_POLICIES", "CategoryPolicy", "OVERRIDABLE", "resolve", "envelope", "next_delay"]

MAX_DELAY_S = 86_400.0  # no single wait longer than a day, whatever a provider asks

OVERRIDABLE: frozenset[str] = frozenset(
    c for c, p in DEFAULT_POLICIES.items() if p.retryable and c != Category.CIRCUIT_OPEN
)


def resolve(*layers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, CategoryPolicy]:
    """Defaults, then each layer's overrides in order (settings, crew, task): later layers win,
    field by field. Unknown categories and non-retryable ones cannot be overridden."""
    table = dict(DEFAULT_POLICIES)
    for layer in layers:
        for category, fields in (layer or {}).items():
            if category not in OVERRIDABLE:
                raise ValueError(f"retry of category {category!r} cannot be configured")
            given = {k: v for k, v in fields.items() if v is not None}
            table[category] = replace(table[category], **given)
    return table


def envelope(table: Mapping[str, CategoryPolicy]) -> int:
    """``maximum_attempts`` of the Temporal RetryPolicy: a safety net above every category's own
    budget (the boundary stops each category first), so Temporal never cuts a category short.
    Waits on an open circuit are attempts too, so their budget is part of it."""
    return sum(p.maximum_attempts for p in table.values() if p.retryable)


def backoff_delay(policy: CategoryPolicy, failures: int, rng: random.Random) -> float:
    """Jittered delay after the ``failures``-th failure of a category (1-based)."""
    base = min(policy.maximum_interval_s, policy.initial_interval_s * policy.backoff ** (failures - 1))
    return rng.uniform(base * (1.0 - policy.jitter), base)


def next_delay(
    policy: CategoryPolicy, failures: int, rng: random.Random, retry_after_s: float | None = None
) -> float:
    """The delay before the next attempt. A provider's Retry-After comes first: exactly that long
    plus up to ``jitter`` of it (never earlier, and parked callers do not all return at once);
    without one, the category's jittered exponential backoff."""
    if retry_after_s is not None and retry_after_s > 0:
        wait = min(retry_after_s, MAX_DELAY_S) if math.isfinite(retry_after_s) else MAX_DELAY_S
        return wait * (1.0 + rng.uniform(0.0, policy.jitter))
    return backoff_delay(policy, failures, rng)


def to_json(table: Mapping[str, CategoryPolicy]) -> dict[str, dict[str, Any]]:
    return {category: asdict(policy) for category, policy in table.items()}


def from_json(data: Mapping[str, Mapping[str, Any]]) -> dict[str, CategoryPolicy]:
    return {category: CategoryPolicy(**fields) for category, fields in data.items()}
