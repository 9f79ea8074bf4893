"""JSON logs through structlog, with the request id of the request being served.

Logs never carry a token, a secret or an email: the only per-request fields bound are
the request id, method, route template and status. ``redact`` is a last line of defence
for any event dict that names a sensitive key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "token",
        "secret",
        "secret_token",
        "password",
        "email",
        "emails",
        "admin_token",
        "token_sha256",
        "cookie",
    }
)


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Replace the value of any sensitive key with a fixed marker."""
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def shared_processors() -> list[Any]:
    """Processors used both by structlog loggers and by stdlib records routed through it."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def configure_logging(level: str = "INFO") -> None:
    """Send every log record (ours, uvicorn's, alembic's) to stderr as one JSON object a line."""
    processors = shared_processors()
    structlog.configure(
        processors=[*processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=processors,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The access log is written by our middleware, with the route template and request id.
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> Any:
    """A structlog logger named after the module."""
    return structlog.stdlib.get_logger(name)
