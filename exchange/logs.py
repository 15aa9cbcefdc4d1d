"""Logging set-up with a last line of defence: identifiers are masked in every record.

Code masks IDs itself (``mask_id``); :class:`MaskingFilter` additionally rewrites any resident ID
or credit code that slips into a log message or its arguments, on every handler we install.
"""

from __future__ import annotations

import logging

from exchange.standards.holder_ids import mask_ids_in_text

__all__ = ["MaskingFilter", "configure_logging", "uvicorn_log_config"]


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


def uvicorn_log_config() -> dict:
    """uvicorn's default logging configuration with :class:`MaskingFilter` on every handler.

    The access log prints request paths, and ``/v1/holders/{holder_id}/...`` carries an ID.
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["mask_ids"] = {"()": "exchange.logs.MaskingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("mask_ids")
    return config


def configure_logging(level: int | str = logging.INFO) -> None:
    """Install one masked stderr handler on the ``govexchange`` logger tree (idempotent)."""
    logger = logging.getLogger("govexchange")
    logger.setLevel(level)
    if any(isinstance(f, MaskingFilter) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskingFilter())
    logger.addHandler(handler)
    logger.propagate = False
