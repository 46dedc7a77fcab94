"""Log output of ``serve`` and ``controller``: plain text (``silex: message``) or JSON lines.

JSON lines use the keys of the core's tracing-subscriber JSON format, so a log pipeline sees one
shape from both halves: ``timestamp`` (RFC 3339, UTC, microseconds), ``level`` (``DEBUG``,
``INFO``, ``WARN``, ``ERROR``), ``target`` (the Python logger, or the core's Rust module),
``message``, then the line's own fields at the top level (``object`` names the Kubernetes
object a line is about: ``"Ingress default/web"``). The core reads ``SILEX_LOG_FORMAT`` when
it is loaded, so :func:`setup_logging` must run before ``silex.dataplane`` is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
CORE_FORMAT_VARIABLE: Final = "SILEX_LOG_FORMAT"

_LEVELS: Final = {"WARNING": "WARN", "CRITICAL": "ERROR"}
"""Python level names that tracing spells differently."""

_RECORD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
"""Attributes every LogRecord has; anything else on a record came from ``extra=`` (a field)."""

log = logging.getLogger("silex")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "level": _LEVELS.get(record.levelname, record.levelname),
            "target": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def setup_logging(level: str, log_format: LogFormat = "text") -> None:
    """Route the ``silex`` logger to stderr at ``level`` in ``log_format``, and tell the core
    (loaded later) to use the same format."""
    os.environ[CORE_FORMAT_VARIABLE] = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter("silex: %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


def announce(message: str, **fields: str | int) -> None:
    """A line written whatever the log level (e.g. the bound listeners), in the log format."""
    _always(logging.INFO, message, fields)


def fatal(message: str) -> None:
    """Why the command stops: ``silex: error: message``, or an ``ERROR`` line in JSON."""
    if any(isinstance(handler.formatter, JsonFormatter) for handler in log.handlers):
        _always(logging.ERROR, f"error: {message}", {})
    else:
        print(f"silex: error: {message}", file=sys.stderr, flush=True)


def _always(level: int, message: str, fields: dict[str, str | int]) -> None:
    if not log.handlers:  # logging not set up (yet): the text format
        print(f"silex: {message}", file=sys.stderr, flush=True)
        return
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None, extra=fields)
    for handler in log.handlers:
        handler.handle(record)


__all__ = ["LOG_FORMATS", "JsonFormatter", "LogFormat", "announce", "fatal", "setup_logging"]
