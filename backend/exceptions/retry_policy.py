"""Per-category retry: the table, its overrides, and the delay before the next attempt.

Temporal gives one RetryPolicy per activity call and no jitter. crewrun keeps one policy per error
category (the table in README.md), merges overrides (settings, then crew spec, then task spec),
and the activity boundary enforces the category's own budget and jittered backoff through
``next_retry_delay``. Pure and deterministic given its ``rng``: the workflow sandbox imports it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from backend.exceptions.codes import NON_RETRYABLE_CATEGORIES, Category

MAX_DELAY_S = 86_400.0  # no single wait longer than a day, whatever a provider asks


@dataclass(frozen=True)
class CategoryPolicy:
    maximum_attempts: int  # attempts of this category within one task, the first one included
    initial_interval_s: float = 1.0
    backoff: float = 2.0
    maximum_interval_s: float = 60.0
    jitter: float = 0.2  # each delay is drawn from [base x (1 - jitter), base]

    @property
    def retryable(self) -> bool:
        return self.maximum_attempts > 1


_P = CategoryPolicy
DEFAULT_POLICIES: dict[str, CategoryPolicy] = {
    Category.NETWORK.value: _P(8, 1, 2, 60),
    Category.TIMEOUT.value: _P(5, 2, 2, 60),
    Category.RATE_LIMIT.value: _P(12, 5, 2, 300),
    Category.EXTERNAL_SERVICE.value: _P(6, 2, 2, 120),
    # Waits for half-open; never the reason a task fails (the breaker issue gives it its delays).
    Category.CIRCUIT_OPEN.value: _P(1000, 5, 1, 60),
    Category.RESOURCE_EXHAUSTION.value: _P(4, 10, 2, 300),
    Category.DATABASE.value: _P(10, 1, 2, 30),
    Category.LLM_OUTPUT.value: _P(3, 1, 1, 1),
    Category.INTERNAL.value: _P(2, 1, 2, 10),
    **{category: _P(1) for category in NON_RETRYABLE_CATEGORIES},
}
del _P

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
