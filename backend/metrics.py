"""Prometheus metrics. Labels are low-cardinality only: categories, codes, severities, services,
statuses; never execution or task ids.

Counters live in the process that observes the event (the worker for errors, retries, task
durations, finished executions and dead letters; it serves them on its own port). Gauges that
describe shared state (breaker states, paused executions, open dead letters) are read from the
backend DB when the API's ``/metrics`` is scraped, so every API replica reports the same truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """One registry per process (tests make their own, so values can be read exactly)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.errors = Counter(
            "crewrun_errors",
            "Failed task attempts, by classification",
            ["category", "code", "severity", "service"],
            registry=r,
        )
        self.retries = Counter(
            "crewrun_retries", "Failed task attempts that will be retried", ["category"], registry=r
        )
        self.executions_finished = Counter(
            "crewrun_executions_finished", "Executions that reached a terminal status", ["status"], registry=r
        )
        self.task_duration = Histogram(
            "crewrun_task_attempt_duration_seconds",
            "Duration of crew task attempts",
            ["outcome"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.dead_letters = Counter("crewrun_dead_letters", "Dead letters created", registry=r)
        # The calls of task attempts (the call journal): tokens and USD of live LLM calls, and the
        # calls a retried attempt was served from the journal instead of paying again.
        self.llm_tokens = Counter(
            "crewrun_llm_tokens", "Tokens of live LLM calls", ["model", "direction"], registry=r
        )
        self.llm_cost = Counter(
            "crewrun_llm_cost_usd", "USD of live LLM calls (known prices)", ["model"], registry=r
        )
        self.calls_replayed = Counter(
            "crewrun_calls_replayed",
            "Calls served from the journal instead of made again",
            ["kind"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "crewrun_alerts_sent", "Alerts delivered to a sink", ["rule", "sink"], registry=r
        )
        self.http_requests = Counter(
            "crewrun_http_requests", "API requests", ["method", "route", "status"], registry=r
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class SharedStateCollector(Collector):
    """Gauges read from the backend DB at scrape time."""

    def __init__(
        self,
        breaker_states: Callable[[], list[tuple[str, str]]],
        count_executions: Callable[[str], int],
        open_dead_letters: Callable[[], int],
    ) -> None:
        self._breaker_states = breaker_states
        self._count_executions = count_executions
        self._open_dead_letters = open_dead_letters

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "crewrun_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            labels=["service"],
        )
        for service, value in self._breaker_states():
            state.add_metric([service], BREAKER_STATE_VALUE.get(value, 0))
        yield state
        yield GaugeMetricFamily(
            "crewrun_paused_executions",
            "Executions waiting for an operator",
            value=self._count_executions("paused"),
        )
        yield GaugeMetricFamily(
            "crewrun_open_dead_letters",
            "Dead letters neither replayed nor discarded",
            value=self._open_dead_letters(),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected lazily: nothing to describe at registration
