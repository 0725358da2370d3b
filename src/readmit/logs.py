"""JSON-lines logging for the API, the pipeline steps and the DAG tasks.

Every record is one JSON object; fields passed with `extra=` (request_id, model_version, ...)
become keys, so one prediction can be traced to its model version and training run.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from readmit.files import private_dir

PACKAGE = __name__.rpartition(".")[0]  # "readmit": every module's logger sits under it
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker, when the API runs several
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_json_logging(level: str = "INFO") -> None:
    """Send the `readmit` loggers to stdout as JSON lines (idempotent)."""
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False


def configure_file_logging(path: Path, level: str = "INFO") -> None:
    """Also append the `readmit` loggers to `path` as JSON lines: the pipeline's audit trail."""
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(level.upper())
    target = str(path.resolve())
    if any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
        return
    private_dir(path.parent)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
