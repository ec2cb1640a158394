"""Exact decimal ↔ integer conversion at the API edge."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest

from investo.api.units import (
    InvalidDecimal,
    NotAMultipleOfStep,
    UnitsError,
    decimals_of,
    format_amount,
    format_steps,
    parse_decimal,
    to_steps,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Decimal(0)),
        ("950.05", Decimal("950.05")),
        ("0.00000001", Decimal("1e-8")),
        ("007.50", Decimal("7.5")),
    ],
)
def test_parse_plain_decimals(text: str, expected: Decimal) -> None:
    assert parse_decimal(text) == expected


def test_parse_keeps_every_digit() -> None:
    text = "1234567890123456789.0123456789012345678"  # 39 characters, beyond float and context precision
    assert str(parse_decimal(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "1\n",
        "+1",
        "-1",
        "-0",
        "1e3",
        "1E3",
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "sNaN",
        ".5",
        "5.",
        "1.2.3",
        "1,5",
        "1_000",
        "٣",  # a non-ASCII digit
        "0x10",
        "1" * 41,
    ],
)
def test_parse_rejects_anything_else(text: str) -> None:
    with pytest.raises(InvalidDecimal):
        parse_decimal(text)


def test_parse_rejects_non_strings() -> None:
    for value in (1, 1.5, Decimal("1"), None, b"1"):
        with pytest.raises(InvalidDecimal, match="decimal string"):
            parse_decimal(value)  # type: ignore[arg-type]


def test_errors_are_value_errors() -> None:
    assert issubclass(InvalidDecimal, ValueError)
    assert issubclass(NotAMultipleOfStep, UnitsError)
    assert issubclass(UnitsError, ValueError)


@pytest.mark.parametrize(
    ("text", "step", "steps"),
    [
        ("950.05", "0.05", 19001),
        ("950.00", "0.05", 19000),
        ("950", "0.05", 19000),
        ("0", "0.05", 0),
        ("0.000", "0.01", 0),
        ("250.01", "0.01", 25001),
        ("3", "1", 3),
        ("3.000000", "1", 3),
        ("1500", "100", 15),
        ("20", "1E+1", 2),
        ("0.00000001", "0.00000001", 1),
        ("0.000000000000000001", "0.000000000000000001", 1),
        ("12345678901234567890123456789.5", "0.5", 24691357802469135780246913579),
    ],
)
def test_to_steps(text: str, step: str, steps: int) -> None:
    assert to_steps(text, Decimal(step)) == steps


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("950.03", "0.05"),
        ("0.001", "0.01"),
        ("1.5", "1"),
        ("150", "100"),
        ("0.000000000000000000000000000000001", "0.01"),
        ("12345678901234567890123456789.25", "0.5"),  # not a multiple only at the 31st digit
    ],
)
def test_to_steps_never_rounds(text: str, step: str) -> None:
    with pytest.raises(NotAMultipleOfStep, match="is not a multiple of the step") as info:
        to_steps(text, Decimal(step))
    assert info.value.value == Decimal(text)
    assert info.value.step == Decimal(step)


def test_to_steps_ignores_the_decimal_context() -> None:
    with decimal.localcontext() as context:
        context.prec = 3
        context.rounding = decimal.ROUND_HALF_UP
        assert to_steps("12345.67", Decimal("0.01")) == 1234567
        with pytest.raises(NotAMultipleOfStep):
            to_steps("12345.675", Decimal("0.01"))


def test_to_steps_rejects_bad_input_and_steps() -> None:
    with pytest.raises(InvalidDecimal):
        to_steps("-1", Decimal("1"))
    for step in (Decimal(0), Decimal("-0.05"), Decimal("NaN"), Decimal("Infinity"), 0.05, 1):
        with pytest.raises(InvalidDecimal, match="step"):
            to_steps("1", step)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "step", "text"),
    [
        (19001, "0.05", "950.05000000"),
        (0, "0.05", "0.00000000"),
        (25001, "0.01", "250.01000000"),
        (3, "1", "3.00000000"),
        (15, "100", "1500.00000000"),
        (2, "1E+1", "20.00000000"),
        (1, "0.00000001", "0.00000001"),
        (1, "0.000000001", "0.000000001"),
        (123, "0.0000000000000001", "0.0000000000000123"),
        (7, "0.050", "0.35000000"),
        (10**30, "0.01", "1" + "0" * 28 + ".00000000"),
    ],
)
def test_format_steps(n: int, step: str, text: str) -> None:
    assert format_steps(n, Decimal(step)) == text
    assert to_steps(text, Decimal(step)) == n


def test_format_steps_round_trips() -> None:
    for step in ("0.05", "0.01", "1", "0.001", "0.00000001", "0.000000000000000001", "25"):
        for n in (0, 1, 2, 7, 99, 1000, 123456789, 10**18 + 1):
            assert to_steps(format_steps(n, Decimal(step)), Decimal(step)) == n


def test_format_steps_rejects_negative_and_non_ints() -> None:
    for n in (-1, True, 1.0, Decimal(1)):
        with pytest.raises(UnitsError):
            format_steps(n, Decimal("0.05"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("units", "decimals", "text"),
    [
        (12345, 2, "123.45000000"),
        (0, 2, "0.00000000"),
        (5, 2, "0.05000000"),
        (7, 0, "7.00000000"),
        (123456789, 8, "1.23456789"),
        (1, 18, "0.000000000000000001"),
        (10**21, 18, "1000.000000000000000000"),
    ],
)
def test_format_amount(units: int, decimals: int, text: str) -> None:
    assert format_amount(units, decimals) == text


def test_format_amount_rejects_bad_input() -> None:
    for units, decimals in ((-1, 2), (1, -1), (True, 2), (1, 2.0)):
        with pytest.raises(UnitsError):
            format_amount(units, decimals)  # type: ignore[arg-type]


def test_decimals_of() -> None:
    assert decimals_of(Decimal("0.05")) == 2
    assert decimals_of(Decimal("0.050")) == 2
    assert decimals_of(Decimal("1")) == 0
    assert decimals_of(Decimal("100")) == 0
    assert decimals_of(Decimal("0.000000001")) == 9
