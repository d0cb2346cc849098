"""One JSON object per log line, with the same fields for every service.

Fields: ts (UTC, ISO 8601 with milliseconds), level, logger, service, message, then any extras
a call passed (`log.info(..., extra={"topic": t})`), then exc_type and exc for an exception.
Chosen with `--log-format json` or SAFEHUB_LOG_FORMAT=json; text stays the default for people
at a terminal. What may be said is unchanged: messages hold no identifier in either format.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from safehub.settings.common import LOG_FORMATS, LogEnv
from safehub.settings.loader import load

FORMATS = LOG_FORMATS
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc_type"] = type(record.exc_info[1]).__name__
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=True)


def format_from_env(chosen: str | None = None) -> str:
    if chosen:  # --log-format: the same rule as the variable's
        return load(LogEnv, {"SAFEHUB_LOG_FORMAT": chosen}).format
    return load(LogEnv).format


def configure_logging(level: int, log_format: str, service: str) -> None:
    """The root logger's one handler, on stderr, in the chosen format."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    # Like before: a no-op where the root logger already has a handler (a test harness).
    logging.basicConfig(level=level, handlers=[handler])
