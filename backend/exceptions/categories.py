"""What each error category means, in one table: everything else derives from it.

A category's traits decide how a failure of that category is handled everywhere:

- ``policy``: its retry budget and backoff (``maximum_attempts=1``: never retried, declared to
  Temporal as a non-retryable error type);
- ``counts_for_breaker``: a failure of the service itself, counted by its circuit breaker
  (a bad request or a refused key says nothing about the service's health);
- ``falls_back``: provider-side trouble another LLM may not have; when the budget is spent (or at
  once, for a non-retryable one) the agent's next fallback LLM takes over;
- ``pauses_by_default``: a person can fix it (a key, a quota, a setting): the execution pauses
  for an operator instead of failing (``CREWRUN_PAUSE_CATEGORIES`` overrides the set);
- ``tool_tells_llm``: when a tool call fails this way, the agent is told (as CrewAI would tell
  it) and may correct itself, instead of the attempt failing: the LLM's arguments were wrong.
  A tool's policy (``on_failure``) overrides it per tool.

Adding a category: one member of :class:`Category`, one row of :data:`TRAITS` (a test fails when
a member has none), and the classifier rules that produce it. Pure: the workflow sandbox imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Category(StrEnum):
    NETWORK = "network"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    EXTERNAL_SERVICE = "external_service"
    CIRCUIT_OPEN = "circuit_open"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    DATABASE = "database"
    LLM_OUTPUT = "llm_output"
    VALIDATION = "validation"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    AUTHENTICATION = "authentication"
    QUOTA_EXHAUSTED = "quota_exhausted"
    CONFIGURATION = "configuration"
    INTERNAL = "internal"
    CANCELLED = "cancelled"


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


NEVER = CategoryPolicy(1)


@dataclass(frozen=True)
class CategoryTraits:
    policy: CategoryPolicy
    counts_for_breaker: bool = False
    falls_back: bool = False
    pauses_by_default: bool = False
    tool_tells_llm: bool = False

    @property
    def retryable(self) -> bool:
        return self.policy.retryable


_P, _T, C = CategoryPolicy, CategoryTraits, Category
# fmt: off
TRAITS: Mapping[Category, CategoryTraits] = MappingProxyType({
    C.NETWORK:             _T(_P(8, 1, 2, 60), counts_for_breaker=True, falls_back=True),
    C.TIMEOUT:             _T(_P(5, 2, 2, 60), counts_for_breaker=True, falls_back=True),
    # Counted by the breaker only with CREWRUN_BREAKER_COUNT_RATE_LIMITS: a 429 is the provider
    # protecting itself, usually from this very caller, not a provider in trouble.
    C.RATE_LIMIT:          _T(_P(12, 5, 2, 300), falls_back=True),
    C.EXTERNAL_SERVICE:    _T(_P(6, 2, 2, 120), counts_for_breaker=True, falls_back=True),
    # Waits for half-open (the breaker gives it its delays); never the reason a task fails.
    C.CIRCUIT_OPEN:        _T(_P(1000, 5, 1, 60)),
    C.RESOURCE_EXHAUSTION: _T(_P(4, 10, 2, 300)),
    C.DATABASE:            _T(_P(10, 1, 2, 30)),
    C.LLM_OUTPUT:          _T(_P(3, 1, 1, 1)),
    C.INTERNAL:            _T(_P(2, 1, 2, 10)),  # a bug: once more, in case it was a fluke
    C.VALIDATION:          _T(NEVER, tool_tells_llm=True),
    C.CONTEXT_LENGTH:      _T(NEVER),
    C.CONTENT_POLICY:      _T(NEVER),
    C.AUTHENTICATION:      _T(NEVER, pauses_by_default=True),
    C.QUOTA_EXHAUSTED:     _T(NEVER, falls_back=True, pauses_by_default=True),
    C.CONFIGURATION:       _T(NEVER, pauses_by_default=True),
    C.CANCELLED:           _T(NEVER),
})
# fmt: on
del _P, _T, C


def traits(category: str) -> CategoryTraits:
    """The traits of a category by its value; an unknown one is never retried and nothing else."""
    try:
        return TRAITS[Category(category)]
    except ValueError:
        return CategoryTraits(NEVER)


# Derived views, for the places that need one fact of every category.
DEFAULT_POLICIES: Mapping[str, CategoryPolicy] = MappingProxyType(
    {c.value: t.policy for c, t in TRAITS.items()}
)
NON_RETRYABLE: tuple[str, ...] = tuple(c.value for c, t in TRAITS.items() if not t.retryable)
BREAKER_COUNTED: frozenset[str] = frozenset(c.value for c, t in TRAITS.items() if t.counts_for_breaker)
FALLS_BACK: frozenset[str] = frozenset(c.value for c, t in TRAITS.items() if t.falls_back)
PAUSES_BY_DEFAULT: tuple[str, ...] = tuple(c.value for c, t in TRAITS.items() if t.pauses_by_default)
TOOL_TELLS_LLM: frozenset[str] = frozenset(c.value for c, t in TRAITS.items() if t.tool_tells_llm)
