"""Logging set-up with a last line of defence: identifiers are masked in every record.

Code masks IDs itself (``mask_id``); :class:`MaskingFilter` additionally rewrites any resident ID
or credit code that slips into a log message or its arguments, on every handler we install.

``GOVX_LOG_FORMAT=json`` makes every handler we install (``govx`` commands, ``govx serve``'s
supervisor, workers and access log) write one JSON object per line (:class:`JsonFormatter`)
for a log shipper; the default ``text`` is for people.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

from exchange.standards.holder_ids import mask_ids_in_text

__all__ = [
    "JsonFormatter",
    "MaskingFilter",
    "configure_logging",
    "log_format",
    "uvicorn_log_config",
]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn's access log record: its args, in order, as fields of a JSON line
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
# attributes every LogRecord has; any other one came with ``extra=`` and becomes a field
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def log_format() -> str:
    """``GOVX_LOG_FORMAT``: ``text`` (default) or ``json``; another value logs as text, after
    saying so on stderr (a typo in a log setting does not stop a server)."""
    value = os.environ.get("GOVX_LOG_FORMAT", "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        sys.stderr.write(
            f"govx: GOVX_LOG_FORMAT={value!r} is not one of {', '.join(LOG_FORMATS)}; "
            "logging as text\n"
        )
        return "text"
    return value


class MaskingFilter(logging.Filter):
    """Rewrites 18-character IDs in a record's message, its arguments and its traceback.

    Arguments are masked one by one (rather than formatting the message here) so that
    formatters which read ``record.args`` themselves, such as uvicorn's access log, still work.
    """

    @staticmethod
    def _mask(value: object) -> object:
        if isinstance(value, int | float | bool) or value is None:
            return value  # keeps %d and %.1f working; a number is never an 18-character ID here
        text = str(value)  # exceptions and other objects are formatted with str() anyway
        masked = mask_ids_in_text(text)
        return value if masked == text else masked

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_ids_in_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._mask(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: self._mask(arg) for key, arg in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_ids_in_text(text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``pid``, the fields of an access-log line (``client``, ``method``, ``path``,
    ``http_version``, ``status``), any ``extra=`` fields and ``exc_info`` for a traceback.

    It formats what :class:`MaskingFilter` left on the record, so IDs arrive masked; a string
    passed with ``extra=`` is masked here, as the filter does not see it.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(zip(ACCESS_FIELDS, record.args, strict=False))
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = mask_ids_in_text(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_ids_in_text(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def _formatter(kind: str = "default") -> dict[str, object]:
    """A ``dictConfig`` formatter: JSON lines, or uvicorn's own ``default``/``access`` text."""
    if log_format() == "json":
        return {"()": "exchange.logs.JsonFormatter"}
    from uvicorn.config import LOGGING_CONFIG

    return dict(LOGGING_CONFIG["formatters"][kind])


def uvicorn_log_config() -> dict:
    """uvicorn's default logging configuration with :class:`MaskingFilter` on every handler.

    The access log prints request paths, and ``/v1/holders/{holder_id}/...`` carries an ID.
    Formatted as ``GOVX_LOG_FORMAT`` says.
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"] = {"default": _formatter("default"), "access": _formatter("access")}
    config.setdefault("filters", {})["mask_ids"] = {"()": "exchange.logs.MaskingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("mask_ids")
    return config


def configure_logging(level: int | str = logging.INFO) -> None:
    """Install one masked stderr handler on the ``govexchange`` logger tree (idempotent), text
    or JSON lines by ``GOVX_LOG_FORMAT``."""
    logger = logging.getLogger("govexchange")
    logger.setLevel(level)
    if any(isinstance(f, MaskingFilter) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format() == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(MaskingFilter())
    logger.addHandler(handler)
    logger.propagate = False
