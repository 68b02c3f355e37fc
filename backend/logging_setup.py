"""structlog configured once per process (API, worker, CLI): JSON lines in services, readable
console output in a terminal. Standard-library records (Temporal's, CrewAI's, uvicorn's) go
through the same renderer, redacted, because CrewAI logs provider error bodies verbatim."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from backend.exceptions.redaction import redact

_configured = False


def _redact_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def _temporal_context(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Temporal's workflow.logger / activity.logger put their context in record extras."""
    record = event.get("_record")
    workflow_info = getattr(record, "temporal_workflow", None)
    if isinstance(workflow_info, dict):
        event.setdefault("workflow_id", workflow_info.get("workflow_id"))
        event.setdefault("run_id", workflow_info.get("run_id"))
    activity_info = getattr(record, "temporal_activity", None)
    if isinstance(activity_info, dict):
        event.setdefault("workflow_id", activity_info.get("workflow_id"))
        event.setdefault("run_id", activity_info.get("workflow_run_id"))
        event.setdefault("attempt", activity_info.get("attempt"))
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _temporal_context,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    _redact_event,
]


def build_handler(use_json: bool, stream: TextIO) -> logging.Handler:
    """A stdlib handler rendering every record, structlog's and foreign ones, redacted."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    return handler


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [build_handler(use_json, sys.stderr)]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "openai", "LiteLLM", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
