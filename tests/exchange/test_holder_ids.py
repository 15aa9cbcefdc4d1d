"""Holder identifiers: published valid examples and systematically broken variants."""

from __future__ import annotations

import datetime as dt

import pytest
from stdnum.cn import ric

from exchange.standards import (
    HolderKind,
    InvalidIdentifier,
    mask_id,
    mask_ids_in_text,
    parse_holder_id,
    validate_ric,
    validate_uscc,
)

VALID_RIC = "11010519491231002X"  # GB 11643 example
VALID_USCC = "91110000600037341L"  # GB 32100 example


def with_check(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")  # stdnum drops the last character


GUANGDONG_RIC = with_check("44060420050101123")  # Chancheng, 2005-01-01, sequence 123 (male)


def test_valid_examples_pass() -> None:
    assert validate_ric(VALID_RIC) == VALID_RIC
    assert validate_ric(GUANGDONG_RIC) == GUANGDONG_RIC
    assert validate_uscc(VALID_USCC) == VALID_USCC
    assert parse_holder_id(VALID_RIC).kind is HolderKind.NATURAL
    assert parse_holder_id(VALID_USCC).kind is HolderKind.LEGAL


def test_normalises_case_and_spaces() -> None:
    assert validate_ric(" 11010519491231002x ") == VALID_RIC
    assert validate_uscc("91110000600037341l") == VALID_USCC


@pytest.mark.parametrize("position", range(17))
def test_every_changed_digit_of_a_resident_id_is_caught(position: int) -> None:
    digit = VALID_RIC[position]
    broken = VALID_RIC[:position] + str((int(digit) + 1) % 10) + VALID_RIC[position + 1 :]
    with pytest.raises(InvalidIdentifier) as info:
        validate_ric(broken, field="id_number")
    assert info.value.field == "id_number"
    assert info.value.reason in {
        "bad check character",
        "bad birth date",
        "bad birth date (in the future)",
        "region code unknown in the birth year (GB/T 2260)",
    }
    assert broken not in str(info.value)


@pytest.mark.parametrize("check", [c for c in "0123456789X" if c != "X"])
def test_every_wrong_check_character_is_caught(check: str) -> None:
    with pytest.raises(InvalidIdentifier, match="bad check character"):
        validate_ric(VALID_RIC[:-1] + check)


@pytest.mark.parametrize("value", [VALID_RIC[:-1], VALID_RIC + "1", "", "1" * 19])
def test_wrong_length_says_so(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="wrong length"):
        validate_ric(value)


@pytest.mark.parametrize("birth", ["19491331", "19490230", "19490000", "20250229"])
def test_impossible_birth_dates(birth: str) -> None:
    broken = with_check("110105" + birth + "002")
    with pytest.raises(InvalidIdentifier, match="bad birth date"):
        validate_ric(broken)


def test_birth_date_in_the_future() -> None:
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    broken = with_check("440604" + tomorrow.strftime("%Y%m%d") + "002")
    with pytest.raises(InvalidIdentifier, match="in the future"):
        validate_ric(broken)


def test_letters_inside_a_resident_id() -> None:
    with pytest.raises(InvalidIdentifier, match="bad format"):
        validate_ric("1101051949123100AX")


@pytest.mark.parametrize("position", range(17))
def test_every_changed_character_of_a_credit_code_is_caught(position: int) -> None:
    char = VALID_USCC[position]
    replacement = "1" if char != "1" else "2"
    broken = VALID_USCC[:position] + replacement + VALID_USCC[position + 1 :]
    with pytest.raises(InvalidIdentifier):
        validate_uscc(broken)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("91110000600037341M", "bad check character"),
        ("91110000600037341", "wrong length"),
        ("9111000060003734IL", "bad format"),  # I is not in the alphabet
        ("Y1110000600037341L", "bad format"),
    ],
)
def test_credit_code_reasons(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier, match=reason):
        validate_uscc(value)


def test_kind_can_be_required() -> None:
    with pytest.raises(InvalidIdentifier):
        parse_holder_id(VALID_USCC, kind=HolderKind.NATURAL)
    with pytest.raises(InvalidIdentifier):
        parse_holder_id(VALID_RIC, kind=HolderKind.LEGAL)


@pytest.mark.parametrize(
    "value", ["abc", "'; DROP TABLE licenses; --", "４４０６０４", "1" * 500, None]
)
def test_garbage_is_rejected_with_a_masked_message(value: object) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_holder_id(value)
    assert "not a resident ID or credit code" in info.value.reason


def test_masking() -> None:
    assert mask_id("440604199001011234") == "4406**********1234"
    assert mask_id("12345678") == "********"
    assert mask_id(None) == ""
    held = parse_holder_id(GUANGDONG_RIC)
    assert GUANGDONG_RIC not in str(held) and GUANGDONG_RIC not in repr(held)
    text = f"row 7: holder {GUANGDONG_RIC} and company {VALID_USCC} failed"
    masked = mask_ids_in_text(text)
    assert GUANGDONG_RIC not in masked and VALID_USCC not in masked
    assert "4406**********" in masked and masked.startswith("row 7: holder ")


def test_error_message_never_contains_the_raw_id() -> None:
    broken = VALID_RIC[:-1] + "1"
    with pytest.raises(InvalidIdentifier) as info:
        validate_ric(broken, field="mother_id")
    assert str(info.value) == "mother_id: bad check character (1101**********0021)"


@pytest.mark.parametrize("first17", ["44999919900101123", "44060419600101123"])
def test_unknown_region_codes(first17: str) -> None:
    with pytest.raises(InvalidIdentifier, match="region code unknown"):
        validate_ric(with_check(first17))


@pytest.mark.parametrize("value", ["４４０６０４２００５０１０１１２３X", "٤٤٠٦٠٤٢٠٠٥٠١٠١١٢٣٤"])
def test_non_ascii_digits_are_not_digits(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="bad format"):
        validate_ric(value)


def test_agrees_with_stdnum_on_many_numbers() -> None:
    """Our reasons are ours, but valid/invalid must be exactly python-stdnum's verdict."""
    import random

    rng = random.Random(7)
    for _ in range(3000):
        region = rng.choice(["440604", "440602", "440802", "440103", "110105", "449999"])
        birth = f"{rng.randint(1940, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 31):02d}"
        first17 = f"{region}{birth}{rng.randint(0, 999):03d}"
        number = first17 + rng.choice([ric.calc_check_digit(first17 + "0"), "0", "X"])
        try:
            ours = validate_ric(number) == number
        except InvalidIdentifier:
            ours = False
        try:
            theirs = ric.is_valid(number)
        except KeyError:  # stdnum's table lookup fails on some unknown counties
            theirs = False
        assert ours == theirs, mask_id(number)
