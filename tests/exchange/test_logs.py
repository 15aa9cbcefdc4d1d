"""The masking log filter: the last line of defence for identifiers in log records."""

from __future__ import annotations

import logging

import pytest

from exchange.logs import MaskingFilter, uvicorn_log_config

RIC = "11010519491231002X"


class Boom(Exception):
    pass


def formatted(record: logging.LogRecord) -> str:
    MaskingFilter().filter(record)
    return logging.Formatter("%(message)s").format(record)


def make(msg: str, args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("govexchange.t", logging.INFO, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("holder %s failed", (RIC,)),
        ("holder %s failed", (RIC.lower(),)),
        ("holder ID%s failed", (RIC,)),
        ("error: %s", (Boom(f"bad value {RIC} in column birth_date"),)),
        (f"literal {RIC} in the message", None),
        ("%(holder)s", ({"holder": RIC},)),
        ("old number %s", ("110105491231002",)),
    ],
)
def test_ids_are_masked_in_every_form(msg: str, args: object) -> None:
    text = formatted(make(msg, args))
    assert "1101" in text and "0519491231" not in text and "05491231" not in text


def test_numbers_keep_their_format() -> None:
    assert formatted(make("%d rows in %.1f s", (12000, 3.25))) == "12000 rows in 3.2 s"


def test_tracebacks_are_masked() -> None:
    try:
        raise Boom(f"row with {RIC}")
    except Boom as exc:
        record = make("failed", None, exc)
        record.exc_info = (Boom, exc, exc.__traceback__)
    assert RIC not in formatted(record)


def test_uvicorn_access_log_gets_the_filter() -> None:
    config = uvicorn_log_config()
    assert all("mask_ids" in h["filters"] for h in config["handlers"].values())
