"""JSON logs through structlog, with the request id of the request being served.

The gateway's own events are rendered by structlog directly (one orjson-encoded line per
event on stderr), which keeps the per-request access log cheap; records of libraries
that log through the standard library (uvicorn, alembic) go through the same processors
and come out in the same shape.

Logs never carry a token, a secret or an email: the only per-request fields bound are
the request id, method, route template and status. ``redact`` is a last line of defence
for any event dict that names a sensitive key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
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


def _logger_name(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Our loggers carry their name as ``logger_name``; show it as ``logger``."""
    if "logger_name" in event_dict:
        event_dict["logger"] = event_dict.pop("logger_name")
    return event_dict


# No request may write more than this to the log, whatever it sends: a long value or a
# deep traceback is cut (its end kept, where the error is) so one line stays bounded.
MAX_FIELD_CHARS = 8_192
MAX_TRACEBACK_CHARS = 24_576
MAX_FIELDS = 40


def cap_size(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Bound every field so that one event renders to well under 64 KB."""
    for key in list(event_dict)[MAX_FIELDS:]:
        del event_dict[key]
    for key, value in event_dict.items():
        if isinstance(value, int | float | bool | None):
            continue
        text = value if isinstance(value, str) else str(value)
        limit = MAX_TRACEBACK_CHARS if key in {"exception", "traceback"} else MAX_FIELD_CHARS
        if len(text) > limit:
            event_dict[key] = f"[{len(text) - limit} characters cut] " + text[-limit:]
    return event_dict


def _dumps(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def shared_processors() -> list[Any]:
    """Processors every event goes through, ours and the standard library's."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def configure_logging(level: str = "INFO") -> None:
    """Write every log event (ours, uvicorn's, alembic's) to stderr as one JSON object a line."""
    number = logging.getLevelNamesMapping()[level]
    renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    structlog.configure(
        processors=[
            *shared_processors(),
            structlog.processors.format_exc_info,
            cap_size,
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        # Not cached: a logger made before a reconfiguration (tests do that) follows it.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared_processors(), structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            cap_size,
            renderer,
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
    """A structlog logger that names its module in each event."""
    return structlog.get_logger(logger_name=name)
