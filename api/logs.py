"""structlog, configured once per process: JSON off a terminal, readable on one."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure_logging(
    json_logs: bool | None = None, level: str = "info", *, cache_loggers: bool = True
) -> None:
    """Once per process. Tests keep loggers uncached so `structlog.testing.capture_logs` sees
    every event."""
    global _configured
    if _configured:
        return
    _configured = True
    use_json = json_logs if json_logs is not None else not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache_loggers,
    )
