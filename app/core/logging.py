"""Logging: JSON lines for machines, one readable line each on a terminal. Log ids and actions, never
patient-identifying fields."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}
# Chatty at INFO about their own plumbing (Alembic's plugin set-up, every HTTP call the server makes to itself).
_WARNING_ONLY = ("alembic", "httpx")
# Libraries whose messages quote the values they complain about (a DICOM UID, a name, a date).
_QUOTING_LOGGERS = ("pydicom", "py.warnings")


class WithholdLibraryValues(logging.Filter):
    """Replace the text of pydicom and Python-warning records: they may quote DICOM values.

    pydicom's "Invalid value for VR UI: '1.2…'" carries the series UID itself (one line per slice
    and access). The logger name and level stay, so the event is still visible.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings" or record.name.split(".")[0] == "pydicom":
            record.msg, record.args = f"{record.name} message withheld (it may quote DICOM values)", ()
        return True


_WITHHOLD = WithholdLibraryValues()


def keep_identifiers_out_of_library_output() -> None:
    """Silence pydicom's value validation and route library warnings through the withholding filter.

    Idempotent; called by the API factory and by ``setup_logging`` (worker, CLI). NextCase checks
    the DICOM attributes it uses itself, so pydicom's read-time validation adds only leaks.
    """
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.captureWarnings(True)  # warnings.warn → the "py.warnings" logger → the filter below
    for name in _QUOTING_LOGGERS:
        logger = logging.getLogger(name)
        if _WITHHOLD not in logger.filters:
            logger.addFilter(_WITHHOLD)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class HumanFormatter(logging.Formatter):
    """``12:03:04 INFO  nextcase.http request method=GET route=/api/v1/cycles/{cycle_id} status=200``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        # Structured payloads (Celery's task message dicts) make lines unreadable: they stay in the JSON logs.
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k not in _STANDARD and v is not None and not isinstance(v, dict | list | tuple))
        return f"{line} {extras}" if extras else line


def setup_logging(level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else HumanFormatter())
    handler.addFilter(_WITHHOLD)  # also for records of the libraries' child loggers
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _WARNING_ONLY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    keep_identifiers_out_of_library_output()
