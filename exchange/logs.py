"""Logging set-up with a last line of defence: identifiers are masked in every record.

Code masks IDs itself (``mask_id``); :class:`MaskingFilter` additionally rewrites any resident ID
or credit code that slips into a log message or its arguments, on every handler we install.
"""

from __future__ import annotations

import logging

from exchange.standards.holder_ids import mask_ids_in_text

__all__ = ["MaskingFilter", "configure_logging"]


class MaskingFilter(logging.Filter):
    """Rewrites 18-character IDs in the formatted message to their masked form."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_ids_in_text(message)
        if masked != message:
            record.msg = masked
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_ids_in_text(text)
        return True


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
